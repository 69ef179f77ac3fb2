"""Builds grow_jax/assets/tokenizer/ deterministically: a byte-level BPE trained on an
in-repo corpus (BabyAI missions, action words, Crafter and Minecraft task text, digits,
punctuation, common English) plus Qwen2-VL's special tokens and Minecraft action tokens.

    python scripts/build_tokenizer.py [--out DIR] [--vocab_size 1536]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from grow_jax.agent import tokenizer as T
from grow_jax.envs import crafter, minecraft

# Qwen2's pre-tokenizer split (single digits, words with an optional leading non-letter, ...).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
COLORS = ("red", "green", "blue", "purple", "yellow", "grey")
OBJECTS = ("box", "ball", "key", "door", "object")
LOCS = ("", " on your left", " on your right", " in front of you", " behind you")
COMMON_ENGLISH = """
the of and to a in is it you that he was for on are with as I his they be at one have this
from or had by hot word but what some we can out other were all there when up use your how
said an each she which do their time if will way about many then them write would like so
these her long make thing see him two has look more day could go come did number sound no
most people my over know water than call first who may down side been now find any new work
part take get place made live where after back little only round man year came show every
good me give our under name very through just form sentence great think say help low line
differ turn cause much mean before move right boy old too same tell does set three want air
well also play small end put home read hand port large spell add even land here must big
high such follow act why ask men change went light kind off need house picture try us again
animal point mother world near build self earth father head stand own page should country
found answer school grow study still learn plant cover food sun four between state keep eye
never last let thought city tree cross farm hard start might story saw far sea draw left late
run don't while press close night real life few north open seem together next white children
begin got walk example ease paper group always music those both mark often letter until mile
river car feet care second book carry took science eat room friend began idea fish mountain
stop once base hear horse cut sure watch color face wood main enough plain girl usual young
ready above ever red list though feel talk bird soon body dog family direct pose leave song
measure door product black short numeral class wind question happen complete ship area half
rock order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb
sing listen six table travel less morning ten simple several toward war lay against pattern
slow center love person money serve appear road map rain rule govern pull cold notice voice
unit power town fine certain fly fall lead dark machine note wait plan figure star box noun
field rest correct able pound done beauty drive stood contain front teach week final gave
green oh quick develop ocean warm free minute strong special mind behind clear tail produce
fact street inch multiply nothing course stay wheel full force blue object decide surface deep
moon island foot system busy test record boat common gold possible plane stead dry wonder
laugh thousand ago ran check game shape equate miss brought heat snow tire bring yes distant
fill east paint language among agent action task goal reward success episode step observe
image frame instruction mission assistant user system helpful what should next the agent
""".split()  # noqa: SIM905  (a word list reads best as text)


def babyai_missions(rng: random.Random) -> list[str]:
    def desc(det, color, obj, loc):
        return f"{det} {color + ' ' if color else ''}{obj}{loc}"

    singles = []
    for det, color, obj, loc in itertools.product(("a", "the"), ("",) + COLORS, OBJECTS, LOCS):
        d = desc(det, color, obj, loc)
        singles.append(f"go to {d}")
        if obj == "door":
            singles.append(f"open {d}")
        elif obj != "object" or det == "a":
            singles.append(f"pick up {d}")
    out = list(singles)
    for _ in range(1500):
        a, b = rng.choice(COLORS), rng.choice(COLORS)
        o1, o2 = rng.choice(OBJECTS[:3]), rng.choice(OBJECTS)
        out.append(f"put the {a} {o1} next to the {b} {o2}")
    for _ in range(1500):
        s1, s2 = rng.choice(singles), rng.choice(singles)
        out.append(rng.choice((f"{s1}, then {s2}", f"{s1} after you {s2}", f"{s1} and {s2}")))
    return out


def corpus() -> list[str]:
    """Training lines (fixed order, seeded sampling): the tokenizer is a pure function of it."""
    rng = random.Random(0)
    lines = babyai_missions(rng)
    lines += [w for w in T.TEXT_ACTION_WORDS for _ in range(200)]  # favour whole action words
    lines += [w.replace("_", " ") for w in T.TEXT_ACTION_WORDS]
    lines += [t.instruction for t in crafter.make_tasks()] * 20
    items = set()
    for t in minecraft.make_tasks():
        lines += [t.instruction] * 3
        items.update(t.spawn["tools"])
        items.update(i.split(">")[0] for i in t.spawn["init_inventory"])
    lines += sorted(i.replace("_", " ") for i in items if i not in ("-", "air"))
    lines += [str(n) for n in range(1000)]
    lines += ["user\n", "assistant\n", "system\n", "You are a helpful assistant."] * 200
    lines += [".", ",", "!", "?", ":", ";", "'", '"', "(", ")", "[", "]", "{", "}", "-", "_", "/",
              "+", "=", "*", "&", "%", "$", "#", "@", "<", ">", "|", "~", "^"]  # fmt: skip
    words = list(COMMON_ENGLISH)
    for _ in range(3000):
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))))
    return lines


def build(out_dir: str, vocab_size: int) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = list(T.QWEN2VL_SPECIAL_TOKENS) + list(T.MINECRAFT_ACTION_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[AddedToken(s, special=True, normalized=False) for s in specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    # Action words the pre-tokenizer splits (move_left -> move, _left) become added tokens.
    split = [w for w in T.TEXT_ACTION_WORDS if len(tok.encode(w).ids) != 1]
    tok.add_tokens([AddedToken(w, normalized=False, special=False) for w in split])
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    hf.chat_template = T.CHAT_TEMPLATE
    os.makedirs(out_dir, exist_ok=True)
    hf.save_pretrained(out_dir)
    _inline_chat_template(out_dir)
    return hf


def _inline_chat_template(out_dir: str) -> None:
    """Keeps the template in tokenizer_config.json (as Qwen2-VL's hub files do)."""
    cfg_path = os.path.join(out_dir, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["chat_template"] = T.CHAT_TEMPLATE
    cfg["tokenizer_class"] = (
        "PreTrainedTokenizerFast"  # generic class: loads in transformers 4 and 5
    )
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    jinja = os.path.join(out_dir, "chat_template.jinja")
    if os.path.exists(jinja):
        os.remove(jinja)
    smap = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "additional_special_tokens": list(T.QWEN2VL_SPECIAL_TOKENS)}  # fmt: skip
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump(smap, f, indent=2)
        f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=T.default_tokenizer_dir())
    ap.add_argument("--vocab_size", type=int, default=1536)
    args = ap.parse_args()
    hf = build(args.out, args.vocab_size)
    print(f"wrote {args.out}: {len(hf)} tokens")


if __name__ == "__main__":
    main()
