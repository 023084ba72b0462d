"""Faces: `detect.py` (MTCNN detection), `align.py` (five-point ArcFace alignment to the 112x112 crop), `check.py`
(is the input an aligned face at all? MTCNN's O-Net read on the 112x112 crop GraFIQs scores), `nonfaces.py`."""
