#!/usr/bin/env python3
"""Copies a GGUF file that has no tokenizer (tokenizer.ggml.model "no_vocab", e.g. what
sqz writes from the stories260K folder) and gives the copy a byte-level SentencePiece
vocabulary of the model's own size, so that tools which only read text (llama-perplexity,
sqz ppl) can run the same weights on the same token ids.

usage: add_byte_vocab.py IN.gguf OUT.gguf

The vocabulary is llama2.c's layout: 0 <unk>, 1 <s> (BOS, added), 2 </s>, 3..258 the byte
tokens <0x00>..<0xFF>, the rest unused pieces that no text can produce. No piece is a
character, so both tokenizers must fall back to bytes for every character: the token ids
are the UTF-8 bytes of the text (with SentencePiece's ▁ for spaces) + 3. Tensors and every
other key are copied unchanged (bytes, types, order).
"""
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFValueType as VT, GGUFWriter


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    r = GGUFReader(sys.argv[1])
    arch = r.fields["general.architecture"].contents()
    n_vocab = int(r.fields[f"{arch}.vocab_size"].contents()) if f"{arch}.vocab_size" in r.fields else None
    if n_vocab is None or n_vocab < 259 + 1:
        print(f"add_byte_vocab: {sys.argv[1]}: vocab_size {n_vocab}, need at least 260")
        return 1
    w = GGUFWriter(sys.argv[2], arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key.startswith("tokenizer.") or key == "general.architecture":
            continue
        vt = f.types[0]
        if vt == VT.ARRAY:
            w.add_key_value(key, f.contents(), vt, f.types[1] if len(f.types) > 1 else None)
        else:
            w.add_key_value(key, f.contents(), vt)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"<unused{i}>" for i in range(len(tokens), n_vocab)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + \
        [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.UNUSED] * (n_vocab - 259)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([int(t) for t in types])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for t in r.tensors:
        # the reader's data: numpy shape (reversed ggml ne), in bytes for block types,
        # which add_tensor turns back into the element shape
        w.add_tensor(t.name, np.ascontiguousarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
