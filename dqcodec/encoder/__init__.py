"""The encoder's choices, which the decoder never needs: the granularity map for a quality, a rate
or a measured target, the distortion and rate estimates behind it, the refinement of the tokens
(`--effort`) and the colour fit."""
