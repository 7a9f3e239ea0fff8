"""humanvision.models"""
