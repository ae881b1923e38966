// Memory read bandwidth: the decode roofline's denominator. Sums a 1 GiB
// f32 buffer with AVX loads on every OpenMP thread, five times.
//   gcc -O3 -mavx2 -fopenmp bench/membw.c -o /tmp/membw && OMP_NUM_THREADS=2 /tmp/membw
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <omp.h>
#include <time.h>
int main(){ size_t n=1ull<<28; float*a=aligned_alloc(64,n*4); for(size_t i=0;i<n;i++)a[i]=1;
 for(int rep=0;rep<5;rep++){ double t=omp_get_wtime(); float tot=0;
 #pragma omp parallel reduction(+:tot)
 { __m256 s0=_mm256_setzero_ps(),s1=s0,s2=s0,s3=s0;
 #pragma omp for
 for(size_t i=0;i<n;i+=32){ s0=_mm256_add_ps(s0,_mm256_load_ps(a+i));s1=_mm256_add_ps(s1,_mm256_load_ps(a+i+8));s2=_mm256_add_ps(s2,_mm256_load_ps(a+i+16));s3=_mm256_add_ps(s3,_mm256_load_ps(a+i+24));}
 float r[8]; _mm256_storeu_ps(r,_mm256_add_ps(_mm256_add_ps(s0,s1),_mm256_add_ps(s2,s3))); for(int j=0;j<8;j++)tot+=r[j]; }
 t=omp_get_wtime()-t; printf("threads %d read %.2f GB/s (%f)\n",omp_get_max_threads(), n*4/t/1e9, tot);}
}
