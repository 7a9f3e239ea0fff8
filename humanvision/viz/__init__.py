"""humanvision.viz"""
