"""sfcomp: iterative self-filtering of image-text pools for CLIP, in DataComp's formats."""
__version__ = "0.1.0"
