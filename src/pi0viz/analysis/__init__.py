"""Numbers from attention: sinks, summaries, grounding metrics against object masks, and a report.

numpy only (plus matplotlib for the report's plots); no model framework is imported here. Modules:

    maps.py       a capture bundle -> the action tokens' attention over all keys, head mean and head max
    sinks.py      keys that soak up attention whatever the query (per step and layer), and their share
    summaries.py  maps reduced over action tokens / layers / steps, written next to the attention_viz tree
    masks.py      object masks of a camera frame -> coverage per patch of the model's 16 x 16 grid (LIBERO)
    grounding.py  mass, lift, IoU at top 10/25/50 %, pointing hit and entropy against those masks
    metrics.py    the metrics files of saved calls and episodes (JSON, CSV) next to the bundles
    report.py     one offline HTML page of plots over a run
    cli.py        `pi0viz metrics` and `pi0viz report`

The sink criterion itself is in pi0viz.core.sinks (the renderer's --exclude-sinks uses it too).

pi0-FAST decoding calls (pi0viz.capture/2) are measured over their decode steps, one query per step in the action
tokens' place: maps.decode_key_maps, sinks.find_decode_sinks, grounding.decode_grounding and
summaries.write_decode_summaries.

See docs/analysis.md for the definitions.
"""
