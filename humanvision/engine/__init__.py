"""humanvision.engine"""
