#!/usr/bin/env python
"""Train pi0viz's bundled offline prompt tokenizer ("pi0viz-robot-tasks", NOT PaliGemma's).

pi0 reads its prompt through PaliGemma's 257k-piece SentencePiece model, which is downloaded from a
Google Cloud bucket and cannot ship with pi0viz. For the offline demo (random weights, no download)
we train a small SentencePiece model with the same conventions as Gemma's:

    pad = 0, eos = 1, bos = 2, unk = 3, "\\n" is one piece, byte fallback (no <unk> for any text),
    no dummy prefix, whitespace kept as is, digits split.

The ids of this model mean nothing to a real pi0 checkpoint: use the PaliGemma model with one
(see docs/policy.md). The corpus is generated here from LIBERO-style task templates, so the run is
reproducible: a fixed corpus (seeded `random.Random`), BPE on one thread (deterministic merges).

    python scripts/train_tokenizer.py                      # writes the model
    python scripts/train_tokenizer.py --check              # rebuilds in a temp dir, fails if the model differs
    python scripts/train_tokenizer.py --corpus-out c.txt   # also writes the corpus (~640 KB, not shipped)
"""

from __future__ import annotations

import argparse
import hashlib
import io
import random
import sys
import tempfile
from pathlib import Path

import sentencepiece as spm

ROOT = Path(__file__).resolve().parents[1]
MODEL_PATH = ROOT / "src/pi0viz/assets/tokenizer/pi0viz_robot_tasks.model"
VOCAB_SIZE = 1536  # 4 specials + "\n" + 256 byte pieces + ~1275 learned pieces; the model file is ~30 KB
SEED = 20250206
NUM_TEMPLATED = 12000  # sentences sampled from the templates below

# The 40 LIBERO task instructions of the spatial, object, goal and 10 suites, as LIBERO phrases them.
LIBERO_TASKS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "pick up the black bowl next to the ramekin and place it on the plate",
    "pick up the black bowl from table center and place it on the plate",
    "pick up the black bowl on the cookie box and place it on the plate",
    "pick up the black bowl in the top drawer of the wooden cabinet and place it on the plate",
    "pick up the black bowl on the ramekin and place it on the plate",
    "pick up the black bowl next to the cookie box and place it on the plate",
    "pick up the black bowl on the stove and place it on the plate",
    "pick up the black bowl next to the plate and place it on the plate",
    "pick up the black bowl on the wooden cabinet and place it on the plate",
    "pick up the alphabet soup and place it in the basket",
    "pick up the cream cheese and place it in the basket",
    "pick up the salad dressing and place it in the basket",
    "pick up the bbq sauce and place it in the basket",
    "pick up the ketchup and place it in the basket",
    "pick up the tomato sauce and place it in the basket",
    "pick up the butter and place it in the basket",
    "pick up the milk and place it in the basket",
    "pick up the chocolate pudding and place it in the basket",
    "pick up the orange juice and place it in the basket",
    "open the middle drawer of the cabinet",
    "put the bowl on the stove",
    "put the wine bottle on top of the cabinet",
    "open the top drawer and put the bowl inside",
    "put the bowl on top of the cabinet",
    "push the plate to the front of the stove",
    "put the cream cheese in the bowl",
    "turn on the stove",
    "put the bowl on the plate",
    "put the wine bottle on the rack",
    "put both the alphabet soup and the tomato sauce in the basket",
    "put both the cream cheese box and the butter in the basket",
    "turn on the stove and put the moka pot on it",
    "put the black bowl in the bottom drawer of the cabinet and close it",
    "put the white mug on the left plate and put the yellow and white mug on the right plate",
    "pick up the book and place it in the back compartment of the caddy",
    "put the white mug on the plate and put the chocolate pudding to the right of the plate",
    "put both the alphabet soup and the cream cheese box in the basket",
    "put both moka pots on the stove",
    "put the yellow and white mug in the microwave and close it",
]

COLORS = ["black", "white", "red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "gray",
          "yellow and white", "red and white", "dark", "light blue", "wooden", "metal", "plastic", "glass"]
OBJECTS = ["bowl", "plate", "mug", "cup", "ramekin", "basket", "book", "bottle", "wine bottle", "moka pot", "pan",
           "frying pan", "pot", "kettle", "spoon", "fork", "knife", "spatula", "ladle", "cutting board", "towel",
           "sponge", "block", "cube", "cookie box", "cereal box", "can", "soup can", "alphabet soup", "cream cheese",
           "salad dressing", "bbq sauce", "ketchup", "tomato sauce", "butter", "milk", "chocolate pudding",
           "orange juice", "apple", "banana", "lemon", "orange", "carrot", "corn", "eggplant", "potato", "tomato",
           "marker", "pen", "stapler", "scissors", "remote", "phone", "toy", "stuffed animal", "cloth", "lid",
           "caddy", "tray", "box", "jar", "glass", "vase", "shoe", "hammer", "screwdriver", "cable", "battery"]
CONTAINERS = ["basket", "bowl", "drawer", "top drawer", "middle drawer", "bottom drawer", "cabinet", "microwave",
              "box", "caddy", "back compartment of the caddy", "front compartment of the caddy", "sink", "pot",
              "tray", "bin", "cup", "shelf", "oven", "fridge", "dish rack", "rack", "cardboard box"]
SURFACES = ["plate", "left plate", "right plate", "stove", "table", "table center", "counter", "cabinet",
            "wooden cabinet", "top of the cabinet", "shelf", "top shelf", "bottom shelf", "cutting board", "tray",
            "cookie box", "ramekin", "rack", "wine rack", "towel", "mat", "coaster", "left burner", "right burner"]
RELATIONS = ["on", "next to", "between the {a} and the {b} and", "in front of", "behind", "to the left of",
             "to the right of", "near", "inside", "under", "on top of"]
ARTICLE_OPENINGS = ["open the {x}", "close the {x}", "turn on the {x}", "turn off the {x}", "push the {x}",
                    "pull the {x}", "slide the {x}", "wipe the {x}", "lift the {x}", "rotate the {x}",
                    "flip the {x}", "knock over the {x}", "stack the {x}", "unstack the {x}", "fold the {x}",
                    "unfold the {x}", "pour the {x}", "grasp the {x}", "grab the {x}", "hold the {x}",
                    "move the {x}", "lift up the {x}", "point at the {x}", "touch the {x}", "press the {x}"]
APPLIANCES = ["stove", "microwave", "faucet", "light", "lamp", "oven", "drawer", "top drawer", "middle drawer",
              "bottom drawer", "cabinet door", "left door", "right door", "fridge", "dishwasher", "laptop", "box"]
EXTRAS = ["then", "and", "carefully", "slowly", "quickly", "gently", "again", "first", "second", "finally",
          "please", "without touching the {x}", "using the left arm", "using the right arm", "with both arms"]


def _pick(rng: random.Random, items: list[str]) -> str:
    return items[rng.randrange(len(items))]


def _thing(rng: random.Random) -> str:
    """'the <color> <object>' most of the time, a bare object otherwise."""
    obj = _pick(rng, OBJECTS)
    return f"{_pick(rng, COLORS)} {obj}" if rng.random() < 0.45 else obj


def _sentence(rng: random.Random) -> str:
    kind = rng.randrange(8)
    x, y = _thing(rng), _thing(rng)
    if kind == 0:
        rel = _pick(rng, RELATIONS).format(a=_pick(rng, SURFACES), b=_pick(rng, OBJECTS))
        if rel.endswith(" and"):
            return f"pick up the {x} {rel} place it on the {_pick(rng, SURFACES)}"
        return f"pick up the {x} {rel} the {_pick(rng, SURFACES)} and place it on the {_pick(rng, SURFACES)}"
    if kind == 1:
        return f"pick up the {x} and place it in the {_pick(rng, CONTAINERS)}"
    if kind == 2:
        return f"put the {x} {_pick(rng, ['on', 'in', 'into', 'onto', 'on top of', 'inside'])} the " \
               f"{_pick(rng, SURFACES + CONTAINERS)}"
    if kind == 3:
        return f"put both the {x} and the {y} in the {_pick(rng, CONTAINERS)}"
    if kind == 4:
        return f"{_pick(rng, ARTICLE_OPENINGS).format(x=_pick(rng, APPLIANCES))} and put the {x} inside"
    if kind == 5:
        first = _pick(rng, ARTICLE_OPENINGS).format(x=x)
        extra = _pick(rng, EXTRAS).format(x=_pick(rng, OBJECTS))
        return f"{first} {extra} {_pick(rng, ARTICLE_OPENINGS).format(x=y)}"
    if kind == 6:
        n = rng.randrange(2, 10)
        return f"stack {n} {_pick(rng, ['blocks', 'cups', 'bowls', 'plates', 'cubes'])} on the {_pick(rng, SURFACES)}"
    return f"move the {x} {rng.randrange(1, 60)} cm to the {_pick(rng, ['left', 'right', 'front', 'back'])}"


def build_corpus() -> list[str]:
    """The training sentences: each LIBERO task 20 times (so its words become whole pieces) + templates.

    Case variants and LIBERO-90 style underscored scene names (which pi0's prompt cleaning turns into
    spaces) are added too, so capitalised and scene-prefixed prompts still tokenize into few pieces.
    """
    rng = random.Random(SEED)
    lines = [t for t in LIBERO_TASKS for _ in range(20)]
    lines += [t.capitalize() for t in LIBERO_TASKS] + [t.upper() for t in LIBERO_TASKS[:10]]
    for i in range(1, 11):
        lines.append(f"KITCHEN SCENE{i} {_pick(rng, LIBERO_TASKS)}")
        lines.append(f"LIVING ROOM SCENE{i} {_pick(rng, LIBERO_TASKS)}")
        lines.append(f"STUDY SCENE{i} {_pick(rng, LIBERO_TASKS)}")
    for _ in range(NUM_TEMPLATED):
        s = _sentence(rng)
        lines.append(s.capitalize() + "." if rng.random() < 0.1 else s)
    return lines


def train(corpus: list[str], model_path: Path) -> None:
    """Train the BPE model on `corpus` and write it to `model_path`."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=1.0,
        byte_fallback=True,  # any character encodes (as UTF-8 bytes), never <unk>
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,  # Gemma's special ids
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["\n"],  # pi0's "start of answer" token: one piece, like Gemma's id 108
        normalization_rule_name="identity",  # Gemma keeps text as is (no NFKC, no lower-casing)
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        num_threads=1,  # deterministic
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with the shipped model")
    ap.add_argument("--corpus-out", type=Path, help="also write the generated training sentences to this file")
    args = ap.parse_args(argv)
    corpus = build_corpus()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "m.model"
            train(corpus, fresh)
            same = fresh.read_bytes() == MODEL_PATH.read_bytes()
        print(f"{'identical' if same else 'DIFFERENT'}: {MODEL_PATH.relative_to(ROOT)}")
        return 0 if same else 1
    if args.corpus_out:
        args.corpus_out.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    train(corpus, MODEL_PATH)
    digest = hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest()[:16]
    print(f"{len(corpus)} sentences -> {MODEL_PATH.relative_to(ROOT)} "
          f"({MODEL_PATH.stat().st_size} bytes, vocab {VOCAB_SIZE}, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
