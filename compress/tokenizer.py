"""Train a byte-level BPE tokenizer locally, so tests and the embedded default never touch a hub.

    from minitron.compress.tokenizer import train_tokenizer
    tok = train_tokenizer(texts, vocab_size=512)   # a PreTrainedTokenizerFast with bos/eos/pad
    tok.save_pretrained("out/")

Real runs use the teacher's own tokenizer (saved beside its weights); this is only for models the
project builds itself.
"""

from __future__ import annotations

from collections.abc import Iterable

BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    """Byte-level BPE with Llama-style special tokens; deterministic for the same texts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Prepend BOS like Llama does, so a prompt's first token is always the same.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD, clean_up_tokenization_spaces=False
    )
