/*
 * Sparse MQA attention of DeepSeek Sparse Attention (arXiv 2512.02556, §2.1, Eq. 2 in absorbed / MQA mode)
 * as two WebAssembly SIMD kernels that read the selected latents straight from the cache: the gather is
 * fused into both GEMMs, as FlashMLA's sparse decoding kernel does on GPUs. One query t with valid slots
 * s_1..s_n and the H heads of MQA, all sharing the gathered rows:
 *
 *   sparse_scores:    zᵀ[j, h] = Σ_c kv[s_j, c] · q̃[h, c] + Σ_r pe[s_j, r] · q_pe[h, r]      [n, Hp]
 *   (softmax over j, in TypeScript: src/sparse_kernels.ts)
 *   sparse_weighted:  ō[h, c]  = Σ_j p[h, j] · kv[s_j, c]                                  [Hp, C]
 *
 * Built by `npm run build:wasm` (scripts/build-wasm.ts: clang --target=wasm32 -msimd128) into
 * src/wasm/sparse_mqa.wasm.ts, and loaded by src/sparse_wasm.ts on the memory of tfjs-backend-wasm
 * (imported, never grown, never written outside the output arguments): every pointer below is a byte
 * offset of a tensor of that backend. No data segment, no stack, no globals — the build checks this.
 *
 * Layouts (row-major; Hp = H rounded up to 8, padding heads are zero):
 *   kv [S, C], pe [S, R]     the latent cache and the rotated rope keys
 *   pos [n]                  the valid selected positions s_j, in the order the caller gives
 *   qP [Hp/8][C + R][8]      q = [q̃ ; q_pe] in panels of 8 heads (one panel row = 8 heads of one dim)
 *   pP [Hp/4][n][4]          p in panels of 4 heads
 * Summation order (fixed, so every thread computes bit-identical results): each output element is one
 * float32 accumulator, summed in increasing c then r (scores) or increasing j (weighted).
 */
#include <stdint.h>
#include <wasm_simd128.h>

typedef float f32;

#define MADD(acc, x, y) acc = wasm_f32x4_add(acc, wasm_f32x4_mul(x, y))

/* One 4 x 8 tile of zᵀ: rows a0..a3 (latents of 4 slots) against an 8-head panel b over dims [0, len). */
#define SCORES_4x8(a0, a1, a2, a3, b, len)                                               \
  for (int d = 0; d < (len); d++) {                                                       \
    v128_t b0 = wasm_v128_load((b) + d * 8), b1 = wasm_v128_load((b) + d * 8 + 4);       \
    v128_t x0 = wasm_v128_load32_splat((a0) + d), x1 = wasm_v128_load32_splat((a1) + d); \
    v128_t x2 = wasm_v128_load32_splat((a2) + d), x3 = wasm_v128_load32_splat((a3) + d); \
    MADD(c00, x0, b0); MADD(c01, x0, b1); MADD(c10, x1, b0); MADD(c11, x1, b1);           \
    MADD(c20, x2, b0); MADD(c21, x2, b1); MADD(c30, x3, b0); MADD(c31, x3, b1);           \
  }

/* zT [n, Hp] = scores of the n slots pos[0..n) for the Hp heads of qP. Hp must be a multiple of 8. */
__attribute__((export_name("sparse_scores")))
void sparse_scores(const f32 *kv, const f32 *pe, const int32_t *pos, int n, int C, int R, const f32 *qP, int Hp, f32 *zT) {
  const int D = C + R;
  int j = 0;
  for (; j + 4 <= n; j += 4) {
    const f32 *a0 = kv + pos[j] * C, *a1 = kv + pos[j + 1] * C, *a2 = kv + pos[j + 2] * C, *a3 = kv + pos[j + 3] * C;
    const f32 *r0 = pe + pos[j] * R, *r1 = pe + pos[j + 1] * R, *r2 = pe + pos[j + 2] * R, *r3 = pe + pos[j + 3] * R;
    for (int hb = 0; hb < Hp; hb += 8) {
      const f32 *b = qP + hb * D;
      v128_t c00 = wasm_f32x4_splat(0.0f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
      SCORES_4x8(a0, a1, a2, a3, b, C)
      SCORES_4x8(r0, r1, r2, r3, b + C * 8, R)
      f32 *z = zT + j * Hp + hb;
      wasm_v128_store(z, c00); wasm_v128_store(z + 4, c01);
      wasm_v128_store(z + Hp, c10); wasm_v128_store(z + Hp + 4, c11);
      wasm_v128_store(z + 2 * Hp, c20); wasm_v128_store(z + 2 * Hp + 4, c21);
      wasm_v128_store(z + 3 * Hp, c30); wasm_v128_store(z + 3 * Hp + 4, c31);
    }
  }
  for (; j < n; j++) { /* the last n mod 4 slots, one at a time (same order of summation) */
    const f32 *a0 = kv + pos[j] * C, *r0 = pe + pos[j] * R;
    for (int hb = 0; hb < Hp; hb += 8) {
      const f32 *b = qP + hb * D, *br = b + C * 8;
      v128_t c00 = wasm_f32x4_splat(0.0f), c01 = c00;
      for (int d = 0; d < C; d++) {
        v128_t x0 = wasm_v128_load32_splat(a0 + d);
        MADD(c00, x0, wasm_v128_load(b + d * 8)); MADD(c01, x0, wasm_v128_load(b + d * 8 + 4));
      }
      for (int d = 0; d < R; d++) {
        v128_t x0 = wasm_v128_load32_splat(r0 + d);
        MADD(c00, x0, wasm_v128_load(br + d * 8)); MADD(c01, x0, wasm_v128_load(br + d * 8 + 4));
      }
      wasm_v128_store(zT + j * Hp + hb, c00); wasm_v128_store(zT + j * Hp + hb + 4, c01);
    }
  }
}

/* Slots per chunk of sparse_weighted: their rows stay in L1 while every (heads, columns) tile reads them. */
#define CHUNK 16

/*
 * o [Hp, C] = Σ_j p[:, j] ⊗ kv[pos_j, :] over the n slots (pP: [Hp/4][n][4]). Hp must be a multiple of 4.
 * The slots are taken in chunks of CHUNK; a 4-head × 8-column tile of o is carried in registers through
 * a chunk and in o between chunks, so each element still sums its n terms in increasing j.
 */
__attribute__((export_name("sparse_weighted")))
void sparse_weighted(const f32 *kv, const int32_t *pos, int n, int C, const f32 *pP, int Hp, f32 *o) {
  const int C8 = C - C % 8;
  for (int j0 = 0; j0 < n; j0 += CHUNK) {
    const int j1 = j0 + CHUNK < n ? j0 + CHUNK : n;
    for (int cc = 0; cc < C8; cc += 8) {
      for (int hb = 0; hb < Hp; hb += 4) {
        const f32 *p = pP + hb * n;
        f32 *d = o + hb * C + cc;
        v128_t c00, c01, c10, c11, c20, c21, c30, c31;
        if (j0 == 0) {
          c00 = wasm_f32x4_splat(0.0f); c01 = c00; c10 = c00; c11 = c00; c20 = c00; c21 = c00; c30 = c00; c31 = c00;
        } else {
          c00 = wasm_v128_load(d); c01 = wasm_v128_load(d + 4);
          c10 = wasm_v128_load(d + C); c11 = wasm_v128_load(d + C + 4);
          c20 = wasm_v128_load(d + 2 * C); c21 = wasm_v128_load(d + 2 * C + 4);
          c30 = wasm_v128_load(d + 3 * C); c31 = wasm_v128_load(d + 3 * C + 4);
        }
        for (int j = j0; j < j1; j++) {
          const f32 *row = kv + pos[j] * C + cc;
          v128_t g0 = wasm_v128_load(row), g1 = wasm_v128_load(row + 4);
          v128_t w0 = wasm_v128_load32_splat(p + j * 4), w1 = wasm_v128_load32_splat(p + j * 4 + 1);
          v128_t w2 = wasm_v128_load32_splat(p + j * 4 + 2), w3 = wasm_v128_load32_splat(p + j * 4 + 3);
          MADD(c00, w0, g0); MADD(c01, w0, g1); MADD(c10, w1, g0); MADD(c11, w1, g1);
          MADD(c20, w2, g0); MADD(c21, w2, g1); MADD(c30, w3, g0); MADD(c31, w3, g1);
        }
        wasm_v128_store(d, c00); wasm_v128_store(d + 4, c01);
        wasm_v128_store(d + C, c10); wasm_v128_store(d + C + 4, c11);
        wasm_v128_store(d + 2 * C, c20); wasm_v128_store(d + 2 * C + 4, c21);
        wasm_v128_store(d + 3 * C, c30); wasm_v128_store(d + 3 * C + 4, c31);
      }
    }
  }
  for (int c = C8; c < C; c++) { /* the last C mod 8 columns, one at a time (same order of summation) */
    for (int h = 0; h < Hp; h++) {
      const f32 *p = pP + (h - h % 4) * n + h % 4;
      f32 acc = 0.0f;
      for (int j = 0; j < n; j++) acc += p[j * 4] * kv[pos[j] * C + c];
      o[h * C + c] = acc;
    }
  }
}
