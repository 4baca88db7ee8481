/**
 * Writes a trace of dsv32's own forward in the format `dsv32 check` reads: the fixture's steps (prefill,
 * then decodes), every layer's `attn.in` … `ffn.out` and each step's `logits`, floats as F32 (fp32) or
 * BF16 (bf16), indices as I64. Used to make test traces with the bf16 mode and the catalogue switches,
 * and as the TypeScript counterpart of examples/dump_trace.py.
 *
 * @module
 */
import { tf } from '../backend.ts';
import type { Deviations } from '../deviations.ts';
import { createModelCache, disposeModelCache, modelForward, type LayerTrace } from '../model.ts';
import type { Precision } from '../precision.ts';
import { writeSafetensors } from '../node.ts';
import type { WritableTensor } from '../safetensors.ts';
import type { JudgeFixture } from './judge.ts';
import { traceName } from './names.ts';

/** Options of {@link dumpTrace}. */
export interface DumpOptions {
  precision?: Precision;
  deviations?: Deviations;
}

/**
 * Runs the fixture's steps through `modelForward` and collects the trace tensors.
 *
 * @param fixture config, steps, tokens and weights (src/check/run.ts `openCheckFixture`)
 * @param opts precision (floats stored as BF16 when 'bf16') and deviations
 * @returns name → tensor, ready for `writeSafetensors`
 */
export function dumpTrace(fixture: JudgeFixture, opts: DumpOptions = {}): Record<string, WritableTensor> {
  const { config, maxSeqLen, steps, tokens, weights } = fixture;
  const dtype = opts.precision === 'bf16' ? 'BF16' : 'F32';
  const out: Record<string, WritableTensor> = {
    'input.tokens': { dtype: 'I64', shape: [tokens.length], data: Int32Array.from(tokens) },
  };
  const float = (t: tf.Tensor, shape: number[]): WritableTensor => ({ dtype, shape, data: Float32Array.from(t.dataSync() as Float32Array) });
  const index = (data: ArrayLike<number>, shape: number[]): WritableTensor => ({ dtype: 'I64', shape, data: Int32Array.from(data) });
  const cache = createModelCache(config);
  try {
    for (const st of steps) {
      const T = st.length;
      const onLayer = (l: number, t: LayerTrace) => {
        const name = (check: Parameters<typeof traceName>[2]) => traceName(st.step, l, check);
        out[name('attn.in')] = float(t.attnIn, [1, T, config.hidden_size]);
        out[name('attn.qr')] = float(t.qr, [1, T, config.q_lora_rank]);
        out[name('indexer.score')] = float(t.indexScores, [1, ...t.indexScores.shape]);
        out[name('indexer.topk')] = index(t.selected.dataSync() as Int32Array, t.selected.shape);
        out[name('attn.out')] = float(t.attnOut, [1, T, config.hidden_size]);
        out[name('ffn.in')] = float(t.ffnIn, [1, T, config.hidden_size]);
        if (t.routing) {
          out[name('gate.weights')] = { dtype, shape: [T, t.routing.experts], data: Float32Array.from(t.routing.weights) };
          out[name('gate.indices')] = index(t.routing.indices, [T, t.routing.experts]);
        }
        out[name('ffn.out')] = float(t.ffnOut, [1, T, config.hidden_size]);
      };
      const { logits } = modelForward(tokens.slice(st.start_pos, st.start_pos + T), weights, cache, st.start_pos, {
        config, maxSeqLen, probe: { layer: onLayer },
        ...(opts.precision ? { precision: opts.precision } : {}),
        ...(opts.deviations ? { deviations: opts.deviations } : {}),
      });
      out[traceName(st.step, null, 'logits')] = float(logits, logits.shape);
      logits.dispose();
    }
  } finally {
    disposeModelCache(cache);
  }
  return out;
}

/**
 * {@link dumpTrace} written to `path` (metadata: producer, precision and deviations). test/check.test.ts
 * writes its traces this way.
 */
export function writeTrace(path: string, fixture: JudgeFixture, opts: DumpOptions = {}): void {
  writeSafetensors(path, dumpTrace(fixture, opts), {
    producer: 'dsv32 src/check/dump.ts',
    precision: opts.precision ?? 'fp32',
    deviations: [...(opts.deviations ?? [])].join(',') || 'none',
  });
}
