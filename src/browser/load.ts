/**
 * Opens a golden fixture over HTTP in the page: fetches `config.json`, `manifest.json`,
 * `model.safetensors` and `trace.safetensors` of the golden fixture folder `name` (same origin, relative to
 * the page), and for `public-fp32` also the RoPE-bug trace of `public-fp32-indexer-rope-bug/`.
 *
 * Browser-safe: the bytes are parsed in memory (`parseConfig`, `safetensorsFromBytes`).
 *
 * @module
 */
import { parseConfig } from '../config.ts';
import { loadLayerWeights, type LayerWeights } from '../checkpoint.ts';
import { safetensorsFromBytes } from '../safetensors.ts';
import type { OpenFixture } from './compute.ts';

/** Fixtures the page offers (folders under fixtures/golden/). */
export const FIXTURES = ['public-fp32', 'public-fp8'] as const;
/** The RoPE-bug trace and the fixture whose weights it was recorded with. */
const BUG = { fixture: 'public-fp32', dir: 'public-fp32-indexer-rope-bug' };

async function fetchBytes(url: URL): Promise<Uint8Array> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`cannot load ${url.pathname}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

/**
 * Fetches and opens the golden fixture folder `name` (`fixtures/golden/<name>/`) relative to `base` (the page URL).
 *
 * @throws Error naming the file that could not be fetched or parsed
 */
export async function loadFixture(name: string, base: string): Promise<OpenFixture> {
  const root = new URL(`fixtures/golden/${name}/`, base);
  const files = ['config.json', 'manifest.json', 'model.safetensors', 'trace.safetensors'];
  const bytes = await Promise.all(files.map((f) => fetchBytes(new URL(f, root))));
  const text = (b: Uint8Array) => JSON.parse(new TextDecoder().decode(b)) as unknown;
  const config = parseConfig(text(bytes[0]!));
  const manifest = text(bytes[1]!) as OpenFixture['manifest'];
  const weights = safetensorsFromBytes(bytes[2]!, `${name}/model.safetensors`);
  let bugTrace: OpenFixture['bugTrace'];
  if (name === BUG.fixture) {
    const bugBytes = await fetchBytes(new URL(`fixtures/golden/${BUG.dir}/trace.safetensors`, base));
    bugTrace = safetensorsFromBytes(bugBytes, `${BUG.dir}/trace.safetensors`);
  }
  const layers = new Map<number, LayerWeights>();
  return {
    name,
    config,
    manifest,
    trace: safetensorsFromBytes(bytes[3]!, `${name}/trace.safetensors`),
    bugTrace,
    layer(L: number): LayerWeights {
      let w = layers.get(L);
      if (!w) {
        w = loadLayerWeights(weights, config, L);
        layers.set(L, w);
      }
      return w;
    },
  };
}
