#!/usr/bin/env python3
"""Draws the QR code of a `qrCodePng` data: URI (as enrollFactor returns it) in the terminal,
two module rows per line, so a phone can scan it from the screen. Standard library only: it
decodes the PNG itself and reads the modules off the image, checking the finder and timing
patterns on the way (so a picture that is not a QR code fails rather than printing noise).

    python3 examples/show_qr.py 'data:image/png;base64,iVBOR…'
"""

import base64
import sys
import zlib


def check(condition, problem):
    if not condition:
        sys.exit(f"show_qr: {problem}")


def pixels(png):
    """Rows of 0..255 luminance from an 8-bit, non-interlaced PNG (grey, RGB, with or without alpha)."""
    check(png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG")
    i, idat = 8, b""
    while i < len(png):
        n = int.from_bytes(png[i:i + 4], "big")
        kind, body = png[i + 4:i + 8], png[i + 8:i + 8 + n]
        if kind == b"IHDR":
            width, height = int.from_bytes(body[:4], "big"), int.from_bytes(body[4:8], "big")
            depth, colour, interlace = body[8], body[9], body[12]
            check(depth == 8 and colour in (0, 2, 4, 6) and not interlace, "unsupported PNG")
            bpp = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    raw, stride, prev, rows = zlib.decompress(idat), width * bpp, bytearray(width * bpp), []
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1: line[x] = (line[x] + a) & 255
            elif f == 2: line[x] = (line[x] + b) & 255
            elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([line[x * bpp] if bpp < 3 else sum(line[x * bpp:x * bpp + 3]) // 3 for x in range(width)])
        prev = line
    return rows

def modules(rows):
    """The QR code's modules (True = dark), found from its top-left finder pattern."""
    dark = [[v < 128 for v in row] for row in rows]
    top = next(y for y, row in enumerate(dark) if any(row))
    left = min(row.index(True) for row in dark if any(row))
    right = max(len(row) - 1 - row[::-1].index(True) for row in dark if any(row))
    run = next(x for x in range(left, len(dark[top]) + 1) if x == len(dark[top]) or not dark[top][x]) - left
    size = run / 7
    n = round((right - left + 1) / size)
    grid = [[dark[int(top + (r + 0.5) * size)][int(left + (c + 0.5) * size)] for c in range(n)] for r in range(n)]
    finder = [[r in (0, 6) or c in (0, 6) or (2 <= r <= 4 and 2 <= c <= 4) for c in range(7)] for r in range(7)]
    for r0, c0 in ((0, 0), (0, n - 7), (n - 7, 0)):
        check([row[c0:c0 + 7] for row in grid[r0:r0 + 7]] == finder, "no finder pattern: not a QR code")
    timing = [i % 2 == 0 for i in range(8, n - 8)]
    check(grid[6][8:n - 8] == timing and [row[6] for row in grid[8:n - 8]] == timing, "no timing pattern")
    return grid

grid = modules(pixels(base64.b64decode(sys.argv[1].split(",", 1)[1])))
# A quiet zone of two modules; an odd row count gets a light row below.
quiet = [False] * (len(grid) + 4)
grid = [quiet, quiet] + [[False, False] + row + [False, False] for row in grid] + [quiet, quiet, quiet]
pairs = list(zip(grid[0::2], grid[1::2]))
if sys.stdout.isatty():
    # Black on white whatever the terminal's colours: upper half block, fg = top, bg = bottom.
    colour = {True: 0, False: 7}
    for top, bottom in pairs:
        print("".join("\033[3%d;4%dm\u2580" % (colour[t], colour[b]) for t, b in zip(top, bottom)) + "\033[0m")
else:
    # Plain text (a log, a pipe): light modules drawn, for a dark background.
    block = {(False, False): "\u2588", (False, True): "\u2580", (True, False): "\u2584", (True, True): " "}
    for top, bottom in pairs:
        print("".join(block[t, b] for t, b in zip(top, bottom)))
