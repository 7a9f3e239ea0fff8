"""humanvision.geometry"""
