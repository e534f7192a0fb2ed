"""Special token ids, fixed for the whole system (SentencePiece is trained with the same ids:
pad_id=0, unk_id=1, bos_id=2, eos_id=3). The decoder input is [BOS] + target, the label
target + [EOS]; source sentences end with EOS. Also the default vocabulary size: what data
preparation trains and what cost measurements assume when no data dir is given."""

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

DEFAULT_VOCAB_SIZE = 8000  # joint source/target SentencePiece vocabulary
