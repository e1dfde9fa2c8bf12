"""MNI space: registration to the MNI152 template, the Harvard-Oxford atlas, and the user cache of arrays derived
from their packaged files."""
