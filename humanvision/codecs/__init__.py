"""humanvision.codecs"""
