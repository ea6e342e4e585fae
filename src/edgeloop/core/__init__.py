"""Values, errors and settings shared by every part of edgeloop (imports nothing heavy)."""
