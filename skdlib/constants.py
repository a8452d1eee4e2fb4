"""Constants every layer of skdlib agrees on (one place each; importing this module does no
work)."""

#: Label value of pixels that no loss or metric counts (Cityscapes' convention).
IGNORE_INDEX = 255

#: Decoded items a data set keeps in memory during a run (bytes, per data set and process): a run
#: reads its small data set many times and decodes each file once.
DECODED_CACHE_BYTES = 512 * 2**20
