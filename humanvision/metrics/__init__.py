"""humanvision.metrics"""
