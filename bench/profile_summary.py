"""What a py-spy raw profile (bench_serving --profile) says, side by side for two servers.

    python bench/profile_summary.py DIR/vllm_c256.txt DIR/swiftnb_c256.txt [--top 15]

py-spy's raw format is one line per distinct stack, `frame;frame;...;frame COUNT`, outermost frame first.
For each file: the share of samples whose innermost frame is each function ("self"), and the share whose
stack passes through it ("total"), the largest first, with idle (waiting) samples counted apart, so the
two servers' CPU work per token can be compared.
"""
import argparse
from collections import Counter
from pathlib import Path

IDLE = ('select (', 'epoll', 'poll (', 'wait (', '_recv (', 'recv_multipart', 'sleep (')


def summary(path: Path) -> tuple[int, int, Counter, Counter]:
    """(samples, idle samples, self counts, total counts) by function."""
    own, through, samples, idle = Counter(), Counter(), 0, 0
    for line in path.read_text(errors='replace').splitlines():
        stack, _, count = line.rpartition(' ')
        if not count.isdigit():
            continue
        frames, n = stack.split(';'), int(count)
        samples += n
        if any(word in frames[-1] for word in IDLE):
            idle += n
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            through[frame] += n
    return samples, idle, own, through


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('profiles', nargs='+', type=Path)
    parser.add_argument('--top', type=int, default=15)
    args = parser.parse_args()
    for path in args.profiles:
        samples, idle, own, through = summary(path)
        busy = max(samples - idle, 1)
        print(f'\n{path.name}: {samples} samples, {idle / max(samples, 1):.0%} idle; of the busy ones:')
        for title, counts in (('self', own), ('total', through)):
            print(f'  {title}:')
            for frame, n in counts.most_common(args.top):
                print(f'    {n / busy:6.1%}  {frame[:150]}')


if __name__ == '__main__':
    main()
