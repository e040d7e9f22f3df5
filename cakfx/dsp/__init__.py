"""Signal processing shared by the effects, one module per concept: ``stft`` (framing, the
STFT constants and window), ``mel`` (the Slaney mel front end, block-wise STFT and
overlap-add), ``resample``, ``loudness`` (BS.1770 meters), ``level`` (the level stage) and
``threads`` (block-parallel torch work). Each model keeps its own maths in its plugin."""
