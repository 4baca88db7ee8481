/**
 * The memory benchmark of docs/weights-streaming.md: `dsv32 conformance --weights`'s streamed,
 * resident-weight run (src/conformance/weights.ts → src/layer_stream.ts) on a synthetic checkpoint in
 * the released format with the real 671B widths (scripts/synthetic-checkpoint.ts: hidden 7168, 128
 * heads, q_lora 1536, kv_lora 512, indexer 64 × 128 top-2048, moe_intermediate 2048, dense
 * intermediate 18432, vocabulary 129280; 1 dense + 1 MoE layer, 32 experts, 8 per token, 8 groups with
 * 4 kept), FP8 e4m3 + 128×128 scales, sharded with model.safetensors.index.json.
 *
 * One process per measurement, so that its peak RSS (`process.resourceUsage().maxRSS`) is the run's:
 *
 * ```
 * npx tsx bench/weights-671b.ts --dir /tmp/dsv32-671b --tokens 64 --steps 1 --keep   # writes the checkpoint first if absent
 * npx tsx bench/weights-671b.ts --dir /tmp/dsv32-671b --tokens 2100 --steps 1 --attention fast --chunk 256
 * ```
 *
 * Prints the per-layer log (peak bytes held per layer and step), the rows, wall time, peak RSS and the
 * WebAssembly memory size; `--json FILE` writes them. The checkpoint (≈ 6.3 GB) is deleted at the end
 * unless `--keep`.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { initBackend, tf } from '../src/backend.ts';
import { runWeightsConformance } from '../src/conformance/weights.ts';
import { realWidthConfig, writeSyntheticCheckpoint } from '../scripts/synthetic-checkpoint.ts';

function arg(argv: string[], flag: string): string | undefined {
  const i = argv.indexOf(flag);
  return i >= 0 ? argv[i + 1] : undefined;
}

function int(argv: string[], flag: string, dflt: number): number {
  const v = arg(argv, flag);
  const n = v === undefined ? dflt : Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`weights-671b: ${flag} expects an integer ≥ 0 but got '${v}'`);
  return n;
}

/** Bytes of the WebAssembly memory of the wasm backend (its high-water mark: it never shrinks), or null. */
function wasmMemoryBytes(): number | null {
  const b = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return b.wasm?.HEAPU8?.byteLength ?? null;
}

async function main(argv: string[]): Promise<void> {
  const dir = arg(argv, '--dir') ?? '/tmp/dsv32-671b-width';
  const T = int(argv, '--tokens', 64);
  const steps = int(argv, '--steps', 1);
  const experts = int(argv, '--experts', 32);
  const attention = (arg(argv, '--attention') ?? 'sparse') as 'sparse' | 'dense' | 'fast';
  const chunk = arg(argv, '--chunk') === undefined ? undefined : int(argv, '--chunk', 0);
  const backendName = (arg(argv, '--backend') ?? 'wasm') as 'wasm' | 'cpu';
  const keep = argv.includes('--keep');
  const json = arg(argv, '--json');
  try {
    if (!existsSync(join(dir, 'config.json'))) {
      const t0 = performance.now();
      const { bytes } = writeSyntheticCheckpoint(dir, realWidthConfig(2, experts), 1);
      process.stdout.write(`wrote ${dir}: ${(bytes / 1e9).toFixed(2)} GB in ${((performance.now() - t0) / 1000).toFixed(0)} s (run again for a measurement of the run alone)\n`);
      if (keep) return;
    }
    await initBackend(backendName);
    const tokens = Array.from({ length: T }, (_, i) => (i * 7919 + 11) % 129280);
    const t0 = performance.now();
    const lines: string[] = [];
    const rows = await runWeightsConformance({
      weightsDir: dir, layers: [0, 1], tokens, steps, attention, ...(chunk ? { prefillChunk: chunk } : {}),
      log: (l) => {
        lines.push(l);
        process.stdout.write(`${l}\n`);
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const maxRss = process.resourceUsage().maxRSS * 1024;
    const result = {
      backend: backendName, tokens: T, steps, experts, attention, chunk: chunk ?? null, seconds,
      peak_rss_bytes: maxRss, wasm_memory_bytes: wasmMemoryBytes(),
      layers: rows.filter((r) => r.check === 'weights.finite').map((r) => ({ step: r.step, layer: r.layer, pass: r.pass, peak_bytes: r.peak_bytes })),
      failed: rows.filter((r) => !r.pass).map((r) => `${r.check}: ${r.reason}`),
    };
    process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
    if (json) writeFileSync(json, JSON.stringify({ ...result, log: lines }, null, 1));
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true });
  }
}

main(process.argv.slice(2)).catch((e) => {
  process.stderr.write(`weights-671b: ${(e as Error).message}\n`);
  process.exit(1);
});
