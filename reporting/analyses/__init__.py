"""The report's analyses, one module each; ``registry.py`` lists them in order."""
