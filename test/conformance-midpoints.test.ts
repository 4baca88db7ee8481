// The FP8-midpoint module (src/conformance/fp8/midpoints.ts): detection against every pair of neighbouring
// e4m3 values, the subset enumeration and the flip search.
import { it, expect } from 'vitest';
import { e4m3Decode } from '../src/fp8.ts';
import { MIDPOINT_TOL, midpoint, nearMidpoint, searchFlips, subsets, type Flip } from '../src/conformance/fp8/midpoints.ts';

it('every midpoint between neighbouring positive e4m3 values is found, with the other neighbour (ties to even)', () => {
  for (let code = 0; code < 0x7e; code++) {
    const lo = e4m3Decode(code);
    const hi = e4m3Decode(code + 1);
    const mid = (lo + hi) / 2;
    const m = midpoint(mid);
    expect(m.dist, `between ${lo} and ${hi}`).toBe(0);
    // round-to-nearest-even sends the midpoint to the even code; the other rounding is the odd one
    expect(m.other, `between ${lo} and ${hi}`).toBe(code % 2 === 0 ? hi : lo);
    expect(midpoint(-mid).other).toBe(-m.other);
    // just inside the tolerance on either side, and not a quarter quantum away
    expect(nearMidpoint(mid + MIDPOINT_TOL / 2)).toBe(true);
    expect(nearMidpoint(mid - MIDPOINT_TOL / 2)).toBe(true);
    expect(nearMidpoint(mid + (hi - lo) / 4)).toBe(false);
    expect(midpoint(mid + (hi - lo) / 4).other).toBe(lo); // rounds to hi; the other side is lo
  }
  expect(midpoint(448).dist).toBe(Infinity); // saturated: no other rounding
});

it('subsets come smallest first, each once', () => {
  const all = [...subsets([1, 2, 3, 4])].map((s) => s.join(''));
  expect(all).toEqual(['1', '2', '3', '4', '12', '13', '14', '23', '24', '34', '123', '124', '134', '234', '1234']);
  expect([...subsets([1, 2, 3], 1)]).toEqual([[1], [2], [3]]);
  expect([...subsets([])]).toEqual([]);
});

it('the flip search tries the closest candidates first, within its limits, and names the first subset that reproduces', () => {
  const c: Flip[] = [5, 1, 3, 2, 4].map((d) => ({ input: 'ffn.in', token: 0, element: d, dist: d * 1e-6, linear: 'dense.w1' }));
  const tried: string[] = [];
  const found = searchFlips(c, (s) => (tried.push(s.map((f) => f.element).join('+')), s.length === 2 && s[0]!.element === 2 && s[1]!.element === 4));
  expect(found!.map((f) => f.element)).toEqual([2, 4]);
  expect(tried.slice(0, 6)).toEqual(['1', '2', '3', '4', '5', '1+2']);
  expect(searchFlips(c, () => false, { tries: 3 })).toBeNull();
  let n = 0;
  searchFlips(c, () => (n++, false), { tries: 7 });
  expect(n).toBe(7);
});
