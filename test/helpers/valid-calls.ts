/**
 * One valid call per tensor function of the public API, on a toy model, for the generated contract
 * test (test/contract.test.ts): the test perturbs every tensor these arguments hold.
 *
 * A builder returns fresh arguments each time (a call may consume a cache). Sizes: D = 8, H = 2,
 * Dq = 4, C = 8, Dn = 4, R = 4, Dv = 3, HI = 2, DI = 8, E = 4, I = 4, F = 6, V = 10.
 */
import { tf } from '../../src/backend.ts';
import { CONFIG_671B, type ModelConfig } from '../../src/config.ts';
import type { AttentionWeights, FfnWeights, GlobalWeights, LayerWeights, MoeWeights } from '../../src/checkpoint.ts';
import { createIndexerCache } from '../../src/indexer.ts';
import { createMlaCache } from '../../src/mla.ts';
import { createModelCache } from '../../src/model.ts';

export const TOY: ModelConfig = {
  ...CONFIG_671B,
  vocab_size: 10, hidden_size: 8, intermediate_size: 6, moe_intermediate_size: 4, num_hidden_layers: 2, first_k_dense_replace: 1,
  num_attention_heads: 2, n_routed_experts: 4, n_shared_experts: 1, num_experts_per_tok: 2, n_group: 1, topk_group: 1,
  q_lora_rank: 4, kv_lora_rank: 8, qk_nope_head_dim: 4, qk_rope_head_dim: 4, v_head_dim: 3,
  index_n_heads: 2, index_head_dim: 8, index_topk: 2, rope_scaling: null, quantization_config: undefined,
} as ModelConfig;

let seed = 1;
const rnd = (shape: number[], scale = 0.5): tf.Tensor => tf.mul(tf.randomUniform(shape, -1, 1, 'float32', seed++), scale);
const ones = (shape: number[]): tf.Tensor => tf.ones(shape);
const lin = (o: number, i: number) => ({ weight: rnd([o, i]) as tf.Tensor2D, fp8: false });

function ffn(F: number, D = 8): FfnWeights {
  return { w1: lin(F, D), w2: lin(D, F), w3: lin(F, D) };
}

function attention(): AttentionWeights {
  return {
    wq_a: lin(4, 8), q_norm: ones([4]) as tf.Tensor1D, wq_b: lin(2 * 8, 4), wkv_a: lin(8 + 4, 8), kv_norm: ones([8]) as tf.Tensor1D,
    wkv_b: lin(2 * (4 + 3), 8), wo: lin(8, 2 * 3),
    indexer: { wq_b: lin(2 * 8, 4), wk: lin(8, 8), weights_proj: lin(2, 8), k_norm: { weight: ones([8]) as tf.Tensor1D, bias: tf.zeros([8]) as tf.Tensor1D } },
  };
}

function moeWeights(): MoeWeights {
  return { gate: { weight: rnd([4, 8]) as tf.Tensor2D, bias: tf.zeros([4]) as tf.Tensor1D }, experts: [ffn(4), ffn(4), ffn(4), ffn(4)], shared: ffn(4) };
}

function layer(kind: 'dense' | 'moe'): LayerWeights {
  return {
    attn_norm: ones([8]) as tf.Tensor1D, ffn_norm: ones([8]) as tf.Tensor1D, attn: attention(),
    ffn: kind === 'dense' ? { kind, dense: ffn(6) } : { kind, moe: moeWeights() },
  };
}

function global(): GlobalWeights {
  return { embed: rnd([10, 8]) as tf.Tensor2D, norm: ones([8]) as tf.Tensor1D, head: rnd([10, 8]) as tf.Tensor2D };
}

const x = (T = 3, D = 8) => rnd([T, D]) as tf.Tensor2D;
const topk = (rows: number[][]) => tf.tensor2d(rows, undefined, 'int32');
const mask = () => tf.tensor2d([[1, 1, 0], [1, 0, 0]]);
const logp = () => tf.tensor2d([[-1, -2, -3], [-0.5, -1, -2]]);
const mlaOpts = { config: TOY, maxSeqLen: 16 };
const GRPO_OPTIONS = { advantage: 'mean', stdEps: 0, clipLow: 0.2, clipHigh: 0.2, beta: 0.1, kl: 'k3', opsmDelta: 1, aggregation: 'token-mean' } as const;
const grpoInputs = () => ({ rewards: tf.tensor1d([1, 0]), mask: mask(), logp: logp(), logpOld: logp(), logpRef: logp(), logpSampler: logp() });
const probs = () => tf.tensor3d([[[1, 0, 0], [0.5, 0.5, 0], [0.2, 0.3, 0.5]]]);
const scoresTT = () => tf.tensor2d([[1, 0, 0], [0.5, 2, 0], [0.1, 0.3, 0.2]]);

/** Valid arguments of every function that has a contract, by function name. */
export const VALID_CALLS: Record<string, () => unknown[]> = {
  // DSA: indexer, top-k, sparse attention
  fp8Index: () => [rnd([3, 2, 8]), rnd([3, 2]), rnd([5, 8]), ones([5])],
  indexerScores: () => [x(), rnd([3, 4]), attention().indexer, createIndexerCache(), 0, mlaOpts],
  indexerScoresExact: () => [x(), rnd([3, 4]), attention().indexer, createIndexerCache(), 0, mlaOpts],
  selectTopK: () => [scoresTT(), 0, 2],
  selectionMask: () => [topk([[0, -1], [0, 1]]), 3],
  causalSelectionMask: () => [topk([[0, -1], [0, 1]]), 3, 0],
  sparseAttentionMqa: () => [rnd([2, 2, 8]), rnd([2, 2, 4]), rnd([3, 8]), rnd([3, 4]), topk([[0, -1], [0, 1]]), 1, 0.5],
  denseAttentionMqa: () => [rnd([2, 2, 8]), rnd([2, 2, 4]), rnd([3, 8]), rnd([3, 4]), topk([[0, -1], [0, 1]]), 1, 0.5],
  sparseAttentionMha: () => [rnd([2, 2, 6]), rnd([3, 2, 6]), rnd([3, 2, 3]), topk([[0, -1], [0, 1]]), 1, 0.5],
  denseAttentionMha: () => [rnd([2, 2, 6]), rnd([3, 2, 6]), rnd([3, 2, 3]), topk([[0, -1], [0, 1]]), 1, 0.5],
  sparseAttentionMqaFast: () => [rnd([2, 2, 8]), rnd([2, 2, 4]), rnd([3, 8]), rnd([3, 4]), topk([[0, -1], [0, 1]]), 1, 0.5],
  denseAttentionMqaFast: () => [rnd([2, 2, 8]), rnd([2, 2, 4]), rnd([3, 8]), rnd([3, 4]), topk([[0, -1], [0, 1]]), 1, 0.5],
  indexerScoresFast: () => [rnd([3, 2, 8]), rnd([3, 2]), rnd([5, 8]), ones([5])],
  selectTopKFast: () => [scoresTT(), 0, 2],
  // MLA, MoE, model
  mlaQuery: () => [x(), attention(), 0, mlaOpts],
  mlaLatent: () => [x(), attention(), 0, mlaOpts],
  mlaAttend: () => [rnd([2, 2, 4]), rnd([2, 2, 4]), rnd([3, 8]), rnd([3, 4]), topk([[0, -1], [0, 1]]), attention(), 1, { ...mlaOpts, mode: 'mqa' }],
  mlaForward: () => [x(), attention(), createMlaCache(), 0, mlaOpts],
  moeGate: () => [x(), moeWeights().gate, TOY],
  swigluFfn: () => [x(), ffn(6), null],
  moe: () => [x(), moeWeights(), TOY],
  routingScores: () => [rnd([3, 4]), moeWeights().gate, TOY],
  roundToBf16: () => [rnd([2, 3])],
  asActivation: () => [rnd([2, 3]), 'bf16'],
  embedTokens: () => [[1, 2, 3], global().embed],
  blockForward: () => [x(), null, layer('moe'), createMlaCache(), 0, mlaOpts],
  headLogits: () => [x(), x(), global(), 1e-6, 'all'],
  modelForward: () => [[1, 2, 3], { global: global(), layers: [layer('dense'), layer('moe')] }, createModelCache(TOY), 0, mlaOpts],
  // numerics
  e4m3Round: () => [rnd([2, 3], 500)],
  actQuant: () => [rnd([2, 8]), null, 4],
  actQuantDequant: () => [rnd([2, 8]), 'ue8m0', 4],
  weightDequant: () => [rnd([4, 4]), ones([2, 2]), 2],
  linear: () => [x(), lin(5, 8), null],
  matMulWeightT: () => [x(), rnd([5, 8])],
  hadamard: () => [rnd([3, 8])],
  rmsNorm: () => [x(), ones([8]), 1e-6],
  rmsNormResidual: () => [x(), x(), ones([8]), 1e-6],
  layerNorm: () => [x(), ones([8]), tf.zeros([8]), 1e-6],
  applyRope: () => [rnd([3, 2, 4]), ones([3, 2]), tf.zeros([3, 2]), false],
  // training math
  groupAdvantages: () => [tf.tensor1d([1, 0, 2]), 'mean', 0],
  tokenRatio: () => [logp(), logp(), mask()],
  clippedSurrogate: () => [logp(), tf.tensor1d([1, -1]), mask(), 0.2, 0.2],
  klK3: () => [logp(), logp(), mask()],
  klUnbiasedK3: () => [logp(), logp(), logp(), mask()],
  opsmSequenceKl: () => [logp(), logp(), mask()],
  opsmKeepMask: () => [tf.tensor1d([1, -1]), tf.tensor1d([0.5, 2]), 1],
  aggregateLoss: () => [logp(), mask(), 'token-mean'],
  grpoLoss: () => [grpoInputs(), GRPO_OPTIONS],
  grpoLossAndGrad: () => [grpoInputs(), GRPO_OPTIONS],
  maskedLogSoftmax: () => [logp(), tf.tensor2d([[1, 1, 0], [1, 0, 1]])],
  tokenLogProbs: () => [logp(), tf.tensor1d([0, 2], 'int32')],
  keepSamplingLogProbs: () => [logp(), tf.tensor2d([[1, 1, 0], [1, 0, 1]]), tf.tensor1d([0, 2], 'int32')],
  keepSamplingRatio: () => [logp(), logp(), tf.tensor2d([[1, 1, 0], [1, 0, 1]]), tf.tensor1d([0, 2], 'int32')],
  keptSetFromLogits: () => [logp(), { topP: 0.9 }],
  indexerTarget: () => [probs()],
  indexerSelection: () => [scoresTT(), 2],
  indexerKlDense: () => [probs(), scoresTT()],
  indexerKlSparse: () => [probs(), scoresTT(), 2],
};
