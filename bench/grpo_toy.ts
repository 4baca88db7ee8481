/**
 * Worked example of the DeepSeek-V3.2 GRPO loss on a toy policy; writes docs/grpo-worked-example.md.
 *
 *   npx tsx bench/grpo_toy.ts            (cpu backend, deterministic: seeded sampler)
 *
 * Toy: a context-free policy π_θ = softmax(θ) over V tokens; a completion is T tokens drawn i.i.d.;
 * reward R = fraction of tokens equal to the target token 0. The reference policy π_ref puts 0.99 on token
 * V−1, which π_θ makes rare: whenever the sampler draws it, π_θ ≪ π_ref on a sampled token, the case of
 * V3.2 §3.1 Eq. 7. Both runs use the V3.2 loss (A = R − mean, clip 0.2, OPSM δ, seq-mean-token-mean);
 * they differ only in the KL estimator: ρ·k3 (V3.2) or plain k3.
 */
import { writeFileSync } from 'node:fs';
import { initBackend, tf } from '../src/backend.ts';
import { grpoLoss, klK3, klUnbiasedK3, type GrpoOptions, type KlEstimator } from '../src/grpo.ts';

const V = 6, G = 8, T = 16, STEPS = 12, LR = 1.0, BETA = 0.1, SEED = 7;
const THETA0 = [2, 0, 0, 0, 0, -4];
const TARGET = 0;
const REF_LOGITS = [0, 0, 0, 0, 0, 6];

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const logSoftmax = (z: number[]): number[] => {
  const m = Math.max(...z);
  const l = Math.log(z.reduce((a, v) => a + Math.exp(v - m), 0)) + m;
  return z.map((v) => v - l);
};
const fmt = (x: number, d = 4): string => (!Number.isFinite(x) ? String(x) : Math.abs(x) >= 1e5 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(2) : x.toFixed(d));

interface StepRow { step: number; loss: number; maxGrad: number; n5: number; pTarget: number; pAvoided: number; reward: number }

/** Trains θ for STEPS gradient steps, each on a fresh rollout batch from π_old = π_θ (one update per batch). */
function train(kl: KlEstimator): StepRow[] {
  const rnd = mulberry32(SEED);
  const lpRef = logSoftmax(REF_LOGITS);
  const options: GrpoOptions = { advantage: 'mean', stdEps: 0, clipLow: 0.2, clipHigh: 0.2, beta: BETA, kl, opsmDelta: 0.5, aggregation: 'seq-mean-token-mean' };
  let theta = tf.tensor1d(THETA0);
  const rows: StepRow[] = [];
  for (let step = 0; step < STEPS; step++) {
    const lpOld = logSoftmax(Array.from(theta.dataSync()));
    const tokens = Array.from({ length: G }, () => Array.from({ length: T }, () => {
      let u = rnd(), v = 0;
      while (v < V - 1 && (u -= Math.exp(lpOld[v]!)) > 0) v++;
      return v;
    }));
    const rewards = tokens.map((r) => r.filter((v) => v === TARGET).length / T);
    const gather = (lp: number[]) => tokens.map((r) => r.map((v) => lp[v]!));
    const onehot = tf.tensor3d(tokens.map((r) => r.map((v) => Array.from({ length: V }, (_, j) => (j === v ? 1 : 0))))); // [G, T, V]
    const base = {
      rewards: tf.tensor1d(rewards), mask: tf.ones([G, T]) as tf.Tensor2D,
      logpOld: tf.tensor2d(gather(lpOld)), logpRef: tf.tensor2d(gather(lpRef)), logpSampler: tf.tensor2d(gather(lpOld)),
    };
    const logpOf = (th: tf.Tensor) => tf.sum(tf.mul(onehot, tf.logSoftmax(th)), 2) as tf.Tensor2D; // [G, T] log π_θ(o_{i,t})
    const { value, grad } = tf.valueAndGrad((th: tf.Tensor) => grpoLoss({ ...base, logp: logpOf(th) }, options).loss)(theta);
    const lp = logpOf(theta);
    const gLogp = tf.grad((x: tf.Tensor) => grpoLoss({ ...base, logp: x as tf.Tensor2D }, options).loss)(lp);
    const p = Array.from(tf.tidy(() => tf.softmax(theta)).dataSync());
    rows.push({
      step, loss: value.dataSync()[0]!, maxGrad: Math.max(...Array.from(gLogp.dataSync(), Math.abs)),
      n5: tokens.flat().filter((v) => v === V - 1).length,
      pTarget: p[TARGET]!, pAvoided: p[V - 1]!, reward: rewards.reduce((a, b) => a + b, 0) / G,
    });
    const next = tf.tidy(() => tf.sub(theta, tf.mul(grad, LR)) as tf.Tensor1D);
    tf.dispose([theta, value, grad, gLogp, lp, onehot, ...Object.values(base)]);
    theta = next;
  }
  theta.dispose();
  return rows;
}

/** ∂/∂log π_θ of k3 and of ρ·k3 for one token, through tf.grad, as π_θ falls below π_ref. */
function weights(): { lp: number; k3: number; gk3: number; uk3: number; guk3: number }[] {
  const lref = -0.5, lold = -1;
  return [-1, -4, -10, -20, -40, -80].map((lp) => {
    const one = tf.tensor2d([[1]]), ref = tf.tensor2d([[lref]]), old = tf.tensor2d([[lold]]), x = tf.tensor2d([[lp]]);
    const k3 = klK3(x, ref, one), uk3 = klUnbiasedK3(x, old, ref, one);
    const gk3 = tf.grad((l: tf.Tensor) => tf.sum(klK3(l as tf.Tensor2D, ref, one)))(x);
    const guk3 = tf.grad((l: tf.Tensor) => tf.sum(klUnbiasedK3(l as tf.Tensor2D, old, ref, one)))(x);
    const r = { lp, k3: k3.dataSync()[0]!, gk3: gk3.dataSync()[0]!, uk3: uk3.dataSync()[0]!, guk3: guk3.dataSync()[0]! };
    tf.dispose([one, ref, old, x, k3, uk3, gk3, guk3]);
    return r;
  });
}

async function main(): Promise<void> {
  const info = await initBackend('cpu');
  const w = weights();
  const unbiased = train('unbiased_k3');
  const k3 = train('k3');
  const lines: string[] = [];
  lines.push('# GRPO worked example: the unbiased KL estimate of DeepSeek-V3.2');
  lines.push('');
  lines.push(`Generated by \`npx tsx bench/grpo_toy.ts\` (backend ${info.name}, tfjs ${info.version}); every number below comes from`);
  lines.push('`src/grpo.ts` through `tf.grad`. Do not edit by hand: rerun the script.');
  lines.push('');
  lines.push('## 1. One token, π_θ falling below π_ref');
  lines.push('');
  lines.push('log π_ref = −0.5, log π_old = −1 (the token was sampled by π_old), log π_θ decreasing. The paper (§3.1, Eq. 7):');
  lines.push('the k3 gradient puts "unbounded weights" on such tokens; weighting k3 by ρ = π_θ/π_old makes the gradient unbiased');
  lines.push('and bounded. Closed forms: ∂k3/∂log π_θ = 1 − π_ref/π_θ and ∂(ρ·k3)/∂log π_θ = ρ·(log π_θ − log π_ref).');
  lines.push('');
  lines.push('| log π_θ | k3 | ∂k3/∂log π_θ | ρ·k3 | ∂(ρ·k3)/∂log π_θ |');
  lines.push('|---:|---:|---:|---:|---:|');
  for (const r of w) lines.push(`| ${r.lp} | ${fmt(r.k3)} | ${fmt(r.gk3)} | ${fmt(r.uk3)} | ${fmt(r.guk3)} |`);
  lines.push('');
  lines.push('The k3 column overflows float32 (≈ 3.4e38) near log π_θ = −89; the unbiased column goes to 0 (x·log x → 0).');
  lines.push('');
  lines.push('## 2. A toy policy trained with the V3.2 loss, with ρ·k3 and with k3');
  lines.push('');
  lines.push(`π_θ = softmax(θ) over V = ${V} tokens, θ₀ = [${THETA0.join(', ')}] (π_θ(5) ≈ 0.002); each step samples a fresh batch of G = ${G}`);
  lines.push(`completions of T = ${T} tokens from π_old = π_θ (seeded sampler, seed ${SEED}) and takes one gradient step on θ (learning rate ${LR}).`);
  lines.push(`Reward = fraction of tokens equal to token 0. π_ref = softmax([${REF_LOGITS.join(', ')}]) puts 0.99 on token 5, so whenever the`);
  lines.push('sampler draws the rare token 5, π_θ ≪ π_ref on a sampled token. Loss: V3.2 Eq. 8 with A = R − mean(R), ε = 0.2,');
  lines.push(`β = ${BETA}, OPSM δ = 0.5, seq-mean-token-mean; only the KL estimator differs. "#5" is how many token-5 samples the batch holds;`);
  lines.push('"max |∂L/∂log π|" is the largest per-token gradient of the loss with respect to the sampled tokens\' log-probs.');
  lines.push('');
  lines.push('| step | ρ·k3 (V3.2): #5 | loss | max \\|∂L/∂log π\\| | π_θ(0) | π_θ(5) | k3: #5 | loss | max \\|∂L/∂log π\\| | π_θ(0) | π_θ(5) |');
  lines.push('|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (let i = 0; i < STEPS; i++) {
    const a = unbiased[i]!, b = k3[i]!;
    lines.push(`| ${i} | ${a.n5} | ${fmt(a.loss)} | ${fmt(a.maxGrad)} | ${fmt(a.pTarget)} | ${fmt(a.pAvoided)} | ${b.n5} | ${fmt(b.loss)} | ${fmt(b.maxGrad)} | ${fmt(b.pTarget)} | ${fmt(b.pAvoided)} |`);
  }
  lines.push('');
  const maxU = Math.max(...unbiased.map((r) => r.maxGrad)), maxK = Math.max(...k3.map((r) => r.maxGrad));
  lines.push(`Largest per-token gradient over the run: ${fmt(maxU)} with ρ·k3, ${fmt(maxK)} with k3.`);
  lines.push('');
  lines.push('Reading the table: in a step whose batch holds a token-5 sample, the k3 term gives that token the weight');
  lines.push('1 − π_ref/π_θ ≈ −600 (× β / (G·|o_i|)), which dwarfs the policy-gradient signal of every other token and jerks θ towards');
  lines.push('π_ref (π_θ(5) jumps after those steps); the ρ·k3 term gives it ρ·(log π_θ − log π_ref) ≈ −6, the same order as the other');
  lines.push('tokens, so the update stays smooth. Both runs share the sampler seed, so their batches coincide until their policies diverge.');
  lines.push('On-policy (ρ = 1 at the update) the two estimators have the same value, so the loss columns agree where the batches');
  lines.push('agree: the difference is in the gradient alone, as the paper says.');
  lines.push('');
  writeFileSync(new URL('../docs/grpo-worked-example.md', import.meta.url), lines.join('\n'));
  console.log(lines.join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
