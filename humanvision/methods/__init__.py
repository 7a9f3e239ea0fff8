"""humanvision.methods"""
