"""Signal processing shared by the effects: threads for block-parallel torch work, and (moving
here) framing, STFT, mel, resampling, loudness and level handling."""
