// Throughput floor of ggml's AVX2 dot for the 32-element formats, with
// every operand in registers: per (weight block, activation block) pair
// sign, maddubs, madd, convert and one FMA, eight independent pairs per
// weight block as the batched decode kernel runs them. Prints cycles per
// pair at the clock measured by a dependent-add loop.
//   cc -O2 -mavx2 -mfma bench/int8-chain.c -o /tmp/int8-chain && /tmp/int8-chain
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
  long n = 1000000000;
  double t0 = now();
  long x = 0, k = n;
  __asm__ volatile("1: add $1, %0\n add $1, %0\n add $1, %0\n add $1, %0\n sub $4, %1\n jnz 1b"
                   : "+r"(x), "+r"(k));
  double ghz = n / (now() - t0) / 1e9;

  __m256i w = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1), a[8];
  __m256 acc[8], d = _mm256_set1_ps(1e-9f);
  for (int i = 0; i < 8; i++) {
    a[i] = _mm256_set1_epi8((char)(i + 1));
    acc[i] = _mm256_setzero_ps();
  }
  long blocks = 100000000;
  t0 = now();
  for (long b = 0; b < blocks; b++) {
    __m256i aw = _mm256_sign_epi8(w, w);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
      __m256i p = _mm256_madd_epi16(ones, _mm256_maddubs_epi16(aw, _mm256_sign_epi8(a[i], w)));
      acc[i] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(p), acc[i]);
    }
    __asm__ volatile("" : "+x"(w));
  }
  double s = now() - t0;
  float sum = 0;
  for (int i = 0; i < 8; i++) sum += acc[i][0];
  double cycles = s * ghz * 1e9 / (blocks * 8.0);
  printf("%.2f GHz; %.2f cycles per block pair; %.1f G multiply-adds/s per core (%g)\n", ghz,
         cycles, 32 * ghz / cycles, sum);
  return 0;
}
