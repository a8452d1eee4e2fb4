"""Constants every layer of skdlib agrees on (one place each; importing this module does no
work)."""

#: Label value of pixels that no loss or metric counts (Cityscapes' convention).
IGNORE_INDEX = 255
