"""Summarizes a DHAT heap profile (bench/heap.sh) per connection: the
bytes and blocks live at the heap's peak, grouped by the first frame of
each allocation's stack that is not the allocator or a standard
container, and by the first frame of confab's own code.

    python3 bench/dhat_report.py dhat.json CONNECTIONS
"""

import json
import re
import sys
from collections import defaultdict

# Frames that only pass an allocation on: the allocator and the growth
# of standard containers. The first frame past them names what was
# allocated (`new<…ScheduledIo>`) or who grew it.
PLUMBING = re.compile(
    r"^(UnknownInlinedFun|malloc|calloc|realloc|memalign|posix_memalign|__rust_|__rdl_|alloc\b|"
    r"alloc_impl|allocate|box_new_uninit|do_alloc|finish_grow|grow_|reserve|with_capacity|"
    r"new_uninitialized|try_allocate_in|to_vec|clone|alloc::|hashbrown::|<alloc::|<hashbrown::)"
)


def name(frame):
    # "0x4A2B3C: confab::ws::connection::{{closure}} (ws.rs:92)"
    m = re.match(r"0x[0-9A-Fa-f]+: (.*)", frame)
    text = m.group(1) if m else frame
    text = re.sub(r"::h[0-9a-f]{16}", "", text)
    text = re.sub(r" \(in [^)]*\)$", "", text)
    return text


def main():
    path, n = sys.argv[1], int(sys.argv[2])
    with open(path) as f:
        d = json.load(f)
    frames = d["ftbl"]
    by_site = defaultdict(lambda: [0, 0])
    by_ours = defaultdict(lambda: [0, 0])
    total_b = total_k = 0
    for pp in d["pps"]:
        gb, gbk = pp.get("gb", 0), pp.get("gbk", 0)
        if gb == 0:
            continue
        total_b += gb
        total_k += gbk
        names = [name(frames[i]) for i in pp["fs"]]
        site = next((x for x in names if not PLUMBING.search(x)), names[-1] if names else "?")
        ours = next((x for x in names if "confab::" in x), "(no confab frame)")
        by_site[site][0] += gb
        by_site[site][1] += gbk
        by_ours[ours][0] += gb
        by_ours[ours][1] += gbk
    print(f"live at the heap's peak: {total_b / n:.0f} bytes in {total_k / n:.1f} blocks per connection ({n} connections)\n")
    for title, table in (("by allocation site", by_site), ("by confab's first frame", by_ours)):
        print(title)
        for key, (b, k) in sorted(table.items(), key=lambda kv: -kv[1][0])[:25]:
            if b / n < 8:
                break
            print(f"  {b / n:7.0f} B {k / n:5.2f} blocks  {key[:150]}")
        print()


if __name__ == "__main__":
    main()
