"""humanvision.data"""
