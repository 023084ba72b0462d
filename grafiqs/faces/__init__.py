"""Is the input an aligned face at all? `check.py`: MTCNN's O-Net read on the 112x112 crop GraFIQs scores."""
