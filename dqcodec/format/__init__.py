"""What bitstream_spec/FORMAT.md specifies, which encoder and decoder share: the container, range
coding, the integer prior and its arithmetic, the token order, resampling, the colour correction
and the flat blocks."""
