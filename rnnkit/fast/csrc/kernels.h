/* rnnkit's native kernels: the elementwise work of one step of each recurrence, and whole step loops with their
   matrix products (see kernels.c for the formulas and ops.cpp for the typed torch operators that call them).

   Every declaration here is the one definition of a kernel's signature: kernels.c includes this header, so a
   definition that disagrees with it does not compile, and ops.cpp calls the kernels through it.

   Conventions: n rows of one step, H hidden units; every matrix is row-major with its own row stride (in
   elements, the s* arguments), so that callers can pass rows [0, n) of (T, B, F) buffers and column blocks of
   them; a pointer documented "may be NULL" is skipped when it is. The whole-sequence loops take contiguous
   (T, B, F) buffers and rows[t] = n_t, the rows still running at step t (the batch sorted longest first). */
#ifndef RNNKIT_KERNELS_H
#define RNNKIT_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t idx;

/* The Fortran BLAS sgemm_ that torch's CPU matrix products call (column-major). Its integer arguments are passed
   as pointers to 64-bit integers holding values below 2^31: on a little-endian machine that storage also reads
   correctly as the 32-bit integers of an LP64 BLAS (ops.cpp checks a test product before using it). */
typedef void (*sgemm_fn)(const char *, const char *, const idx *, const idx *, const idx *, const float *,
                         const float *, const idx *, const float *, const idx *, const float *, float *,
                         const idx *);

/* Threads: a step of at least the given number of values (n x H) is split by rows over the OpenMP threads. */
void set_parallel_min(idx values);
int row_threads(idx n, idx H);

/* LSTM, one step: a (4H: i, f, g, o pre-activations) -> c (in/out), h; fac (6H, may be NULL). */
void lstm_forward(idx n, idx H, const float *a, idx sa, float *c, idx sc, float *h, idx sh, float *fac, idx sf);
void lstm_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, float *dc_run, idx sc,
                   const float *fac, idx sf, float *dg, idx sg);

/* Layer-norm LSTM, one step (Ba et al. 2016); scratch: row_threads(n, H) blocks of 16H zeros. */
void ln_lstm_forward(idx n, idx H, const float *rec, idx srec, const float *xp, idx sx, const float *g_ih,
                     const float *b, const float *g_hh, const float *g_c, const float *b_c, float eps, float *c,
                     idx sc, float *h, idx sh, float *fac, idx sf, float *cs, idx scs, float *stats);
void ln_lstm_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, float *dc_run, idx sc,
                      const float *fac, idx sf, const float *rec, idx srec, const float *xp, idx sx, const float *cs,
                      idx scs, const float *stats, const float *g_ih, const float *g_hh, const float *g_c,
                      float *dxp, idx sg, float *drec, idx sdrec, float *acc_ih, float *acc_b, float *acc_hh,
                      float *acc_gc, float *acc_bc, float *scratch);

/* GRU with the reset gate after the product (torch's form), one step. */
void gru_forward(idx n, idx H, const float *rec, idx srec, const float *xp, idx sx, const float *hp, idx shp,
                 float *h, idx sh, float *fac, idx sf);
void gru_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, const float *fac, idx sf,
                  float *dxp, idx sx, float *drec, idx srec, float *carry, idx sc);

/* GRU with the reset gate before the product (Cho et al. 2014), one step in two halves each way. */
void rb_gates(idx n, idx H, float *rz, idx srz, const float *hp, idx shp, float *reset, idx sreset);
void rb_forward(idx n, idx H, float *cand, idx scand, const float *rz, idx srz, const float *hp, idx shp,
                float *h, idx sh, float *fac, idx sf);
void rb_backward_gates(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, const float *fac,
                       idx sf, float *dxp, idx sx, float *dh_out, idx sd);
void rb_backward_reset(idx n, idx H, const float *d_reset, idx sdr, const float *dh, idx sd, const float *fac,
                       idx sf, float *dxp, idx sx, float *carry, idx sc);

/* Whole step loops, products through gemm. */
void gru_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                          const float *b, const float *xp, float *hs, float *fac, float *rec);
void gru_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *dout, const float *fac, float *dxp, float *drec, float *dh_run);
void rnn_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                          const float *xp, float *hs, idx relu);
void rnn_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *dout, const float *hs, float *dpre, float *dh_run, idx relu);
void rb_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w, const float *xp,
                         float *hs, float *fac, float *resets, float *scratch);
void rb_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w, const float *dout,
                          const float *fac, float *dxp, float *dh_run, float *scratch);
void lstm_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *xp, float *hs, float *c, float *fac, float *a);
void lstm_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                            const float *dout, const float *fac, float *dg, float *dh_run, float *dc_run);
void ln_lstm_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                              const float *xp, const float *g_ih, const float *b, const float *g_hh,
                              const float *g_c, const float *b_c, float eps, float *hs, float *c, float *fac,
                              float *cs, float *stats, float *rec, idx rec_step);
void ln_lstm_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                               const float *dout, const float *fac, const float *rec, const float *xp,
                               const float *cs, const float *stats, const float *g_ih, const float *g_hh,
                               const float *g_c, float *dxp, float *drec, float *dh_run, float *dc_run,
                               float *acc_ih, float *acc_b, float *acc_hh, float *acc_gc, float *acc_bc,
                               float *scratch);

#ifdef __cplusplus
}
#endif

#endif
