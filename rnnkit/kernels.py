"""Fused elementwise kernels for :mod:`rnnkit.fastpath`: C, compiled on first use and cached on disk.

A step of the fast path is one matrix product (torch) and the elementwise rest: the gates' nonlinearities,
the state update, the backward's factors (forward), or the gate gradients (backward). As torch operations
that rest is 10-20 calls per step of a few microseconds of dispatch each, plus a pass over memory each;
measured at (B, H) = (64, 256) on the benchmark machine, an LSTM step's elementwise work took ~300 us in the
forward as torch operations and 43 us as the one C function below, which reads each value once and writes each
result once. ``tests/test_fast_paths.py`` runs the fast path with and without these kernels against the
reference path (the cells' ``recur`` stepped with autograd).

Each function handles n rows of one step; every array is row-major with its own row stride (in elements), so
that the callers can pass rows [0, n) of (T, B, F) buffers and column blocks of them. The formulas and the
layout of the stored factors are those of :mod:`rnnkit.fastpath` (see ``_lstm_cell_factors``,
``_lstm_output_factors``, ``_gru_factors``); the layer-norm statistics follow ``torch.native_layer_norm``
(biased variance, rstd = 1 / sqrt(var + eps)).

A step of at least 16,384 values (B x H) is split by rows over the OpenMP threads: the library is built with
``-fopenmp`` when torch runs on GNU OpenMP (the Linux wheels), so that it shares torch's runtime and the threads
that have just run the step's matrix product; the layer-norm backward keeps per-thread sums of its gains'
gradients and adds them in thread order (the same result at the same thread count). Elsewhere, or if that build
fails, the kernels are serial (``-fopenmp-simd``).

The LSTM's, the layer-norm LSTM's, both GRUs' and the Elman RNN's whole step loops are here too
(``lstm_sequence_forward`` and the like): each step's product through the BLAS ``sgemm_`` that torch's own CPU
matrix products call (MKL in the x86-64 wheels, found in libtorch_cpu and checked on a test product, see
:func:`sequences_available`), then the step's kernel. A small step's work is a few microseconds, and the loop in
Python spent more than that on slicing and calls: at (B, T, H) = (1, 100, 256) a GRU's forward+backward took
12.0 ms with the loop in Python and 6.2 ms with it in C; the RNN's loop in C was 2.67x its loop in Python there.

Build: with the system C compiler (``$CC``, else ``cc``), compiled with ``-O3 -march=native -ffast-math`` (glibc's
libmvec then vectorises expf and tanhf) and linked without it (so that loading the library does not switch the
process to flush-to-zero), into ``$RNNKIT_CACHE_DIR`` (default ``~/.cache/rnnkit``) under a name that
hashes the source, the flags, the compiler and the CPU's flags: ~0.7-1.0 s once per machine, then a load from disk
(:data:`build_seconds` records what this process spent). No compiler, a failed build, a platform other than
Linux or macOS, or ``RNNKIT_KERNELS=0``: :func:`available` is False and the fast path computes the same
things with torch operations.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["available", "build_seconds", "lstm_forward", "lstm_backward", "layer_norm_lstm_forward",
           "layer_norm_lstm_backward", "gru_forward", "gru_backward", "reset_before_gates",
           "reset_before_forward", "reset_before_backward_gates", "reset_before_backward_reset",
           "sequences_available", "gru_sequence_forward", "gru_sequence_backward", "lstm_sequence_forward",
           "lstm_sequence_backward", "layer_norm_lstm_sequence_forward", "layer_norm_lstm_sequence_backward",
           "rnn_sequence_forward", "rnn_sequence_backward", "reset_before_sequence_forward",
           "reset_before_sequence_backward"]

#: Seconds this process spent compiling (0 when the library came from the cache, None before the first use).
build_seconds: float | None = None

_SOURCE = r"""
#include <math.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef long idx;

/* Rows are independent: a step of at least parallel_min values is split over the OpenMP threads (torch's own
   runtime, whose threads are awake after the step's matrix product), each thread a contiguous block of rows.
   A row's arithmetic does not depend on the thread that computes it. The tests lower the threshold, so that
   their small steps run on two threads too. */
static idx parallel_min = 16384;

void set_parallel_min(idx values) { parallel_min = values; }

int row_threads(idx n, idx H) {
#ifdef _OPENMP
    if (n * H < parallel_min) return 1;
    int t = omp_get_max_threads();
    return t < n ? t : (int)n;
#else
    (void)n; (void)H;
    return 1;
#endif
}

#define ROWS_IN_PARALLEL _Pragma("omp parallel for schedule(static) num_threads(row_threads(n, H))")

/* The logistic sigmoid without overflow: e = exp(-|x|) is at most 1, and sigma(x) = 1 / (1 + e) for x >= 0,
   e / (1 + e) below. The textbook 1 / (1 + exp(-x)) overflows to 1 / inf for x < -88.7, and -ffast-math's
   approximate reciprocal turns that into NaN (issue 17: rnnkit.GRU gave NaN on raw pixel values where torch.nn.GRU
   did not). This form is as accurate in both tails (relative), and a NaN argument still gives NaN, as torch's. */
static inline float sigm(float x) {
    float e = expf(-fabsf(x)), s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

/* LSTM, one step, n rows. a: pre-activations (i, f, g, o), 4H wide; c: c_{t-1} in, c_t out; h: h_t out;
   fac (may be NULL): [g i(1-i), c_{t-1} f(1-f), i(1-g^2), h(1-o), o - h tanh(c_t), f], 6H wide. */
void lstm_forward(idx n, idx H, const float *a, idx sa, float *c, idx sc, float *h, idx sh, float *fac, idx sf) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *ar = a + r * sa;
        float *cr = c + r * sc, *hr = h + r * sh;
        float *fr = fac ? fac + r * sf : NULL;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float i = sigm(ar[k]), f = sigm(ar[H + k]), g = tanhf(ar[2 * H + k]), o = sigm(ar[3 * H + k]);
            float cp = cr[k], cn = f * cp + i * g, tc = tanhf(cn), hv = o * tc;
            cr[k] = cn;
            hr[k] = hv;
            if (fr) {
                fr[k] = g * i * (1.0f - i);
                fr[H + k] = cp * f * (1.0f - f);
                fr[2 * H + k] = i * (1.0f - g * g);
                fr[3 * H + k] = hv * (1.0f - o);
                fr[4 * H + k] = o - hv * tc;
                fr[5 * H + k] = f;
            }
        }
    }
}

/* LSTM backward, one step. dh = dh_run + dout; dc = dc_run + dh A; gates' gradients [dc P_i, dc P_f, dc P_g,
   dh P_o] into dg (4H wide); dc_run <- dc f. */
void lstm_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, float *dc_run, idx sc,
                   const float *fac, idx sf, float *dg, idx sg) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf;
        float *cr = dc_run + r * sc, *gr = dg + r * sg;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k];
            float dc = cr[k] + dh * fr[4 * H + k];
            gr[k] = dc * fr[k];
            gr[H + k] = dc * fr[H + k];
            gr[2 * H + k] = dc * fr[2 * H + k];
            gr[3 * H + k] = dh * fr[3 * H + k];
            cr[k] = dc * fr[5 * H + k];
        }
    }
}

/* Layer-norm LSTM, one step (Ba et al. 2016): a = LN(xp; g_ih) + b + LN(rec; g_hh), where xp = W_ih x (raw; its
   normalisation is fused here rather than a separate pass over all steps) and b = b_ih + b_hh (zeros without
   biases); gates; c_t; s = LN(c_t; g_c, b_c); h = o tanh(s). c in/out; cs (may be NULL): c_t copy; stats (may be
   NULL): mean and rstd of rec, of c_t and of xp, 6 per row; fac as in lstm_forward with tanh(s) in place of
   tanh(c_t). */
void ln_lstm_forward(idx n, idx H, const float *rec, idx srec, const float *xp, idx sx, const float *g_ih,
                     const float *b, const float *g_hh, const float *g_c, const float *b_c, float eps, float *c,
                     idx sc, float *h, idx sh, float *fac, idx sf, float *cs, idx scs, float *stats) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *rr = rec + r * srec, *xr = xp + r * sx;
        float *cr = c + r * sc, *hr = h + r * sh;
        float *fr = fac ? fac + r * sf : NULL;
        float sum = 0.0f, sq = 0.0f, csum = 0.0f, csq = 0.0f, xsum = 0.0f, xsq = 0.0f;
        #pragma omp simd reduction(+:sum, xsum)
        for (idx k = 0; k < 4 * H; k++) { sum += rr[k]; xsum += xr[k]; }
        float mean = sum / (float)(4 * H), xmean = xsum / (float)(4 * H);
        #pragma omp simd reduction(+:sq, xsq)
        for (idx k = 0; k < 4 * H; k++) {
            float d = rr[k] - mean, e = xr[k] - xmean;
            sq += d * d;
            xsq += e * e;
        }
        float rstd = 1.0f / sqrtf(sq / (float)(4 * H) + eps), xrstd = 1.0f / sqrtf(xsq / (float)(4 * H) + eps);
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float ai = g_ih[k] * (xr[k] - xmean) * xrstd + b[k] + g_hh[k] * (rr[k] - mean) * rstd;
            float af = g_ih[H + k] * (xr[H + k] - xmean) * xrstd + b[H + k]
                       + g_hh[H + k] * (rr[H + k] - mean) * rstd;
            float ag = g_ih[2 * H + k] * (xr[2 * H + k] - xmean) * xrstd + b[2 * H + k]
                       + g_hh[2 * H + k] * (rr[2 * H + k] - mean) * rstd;
            float i = sigm(ai), f = sigm(af), g = tanhf(ag);
            float cp = cr[k], cn = f * cp + i * g;
            cr[k] = cn;
            if (fr) {
                fr[k] = g * i * (1.0f - i);
                fr[H + k] = cp * f * (1.0f - f);
                fr[2 * H + k] = i * (1.0f - g * g);
                fr[5 * H + k] = f;
            }
        }
        #pragma omp simd reduction(+:csum)
        for (idx k = 0; k < H; k++) { csum += cr[k]; }
        float cmean = csum / (float)H;
        #pragma omp simd reduction(+:csq)
        for (idx k = 0; k < H; k++) { float d = cr[k] - cmean; csq += d * d; }
        float crstd = 1.0f / sqrtf(csq / (float)H + eps);
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float o = sigm(g_ih[3 * H + k] * (xr[3 * H + k] - xmean) * xrstd + b[3 * H + k]
                           + g_hh[3 * H + k] * (rr[3 * H + k] - mean) * rstd);
            float ts = tanhf(g_c[k] * (cr[k] - cmean) * crstd + b_c[k]);
            float hv = o * ts;
            hr[k] = hv;
            if (fr) {
                fr[3 * H + k] = hv * (1.0f - o);
                fr[4 * H + k] = o - hv * ts;
            }
            if (cs) { cs[r * scs + k] = cr[k]; }
        }
        if (stats) {
            float *st = stats + 6 * r;
            st[0] = mean; st[1] = rstd; st[2] = cmean; st[3] = crstd; st[4] = xmean; st[5] = xrstd;
        }
    }
}

/* Layer-norm LSTM backward, one step: through h = o tanh(LN(c)), LN(c)'s backward, the gates, LN(rec)'s and
   LN(xp)'s backward. dxp: dL/d xp (4H, xp raw as in ln_lstm_forward); drec: dL/d rec (4H); dc_run <- dc f; the
   gains' and shifts' gradients are added to acc_hh (4H), acc_gc (H), acc_bc (H), acc_ih (4H), acc_b (4H). */
void ln_lstm_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, float *dc_run, idx sc,
                      const float *fac, idx sf, const float *rec, idx srec, const float *xp, idx sx, const float *cs,
                      idx scs, const float *stats, const float *g_ih, const float *g_hh, const float *g_c,
                      float *dxp, idx sg, float *drec, idx sdrec, float *acc_ih, float *acc_b, float *acc_hh,
                      float *acc_gc, float *acc_bc, float *scratch) {
    /* scratch: row_threads(n, H) blocks of 16H zeros, one per thread: the row's dh and d_shown (2H), then the
       thread's sums of the gains' and shifts' gradients (4H + H + H + 4H + 4H), added to acc_* in thread order
       after. The gate gradients are computed into dxp's row, then replaced by LN(xp)'s backward of them. */
    int threads = row_threads(n, H);
    #pragma omp parallel num_threads(threads) if (threads > 1)
    {
#ifdef _OPENMP
    float *own = scratch + 16 * H * (idx)omp_get_thread_num();
#else
    float *own = scratch;
#endif
    float *dhs = own, *dss = own + H, *sum_hh = own + 2 * H, *sum_gc = own + 6 * H, *sum_bc = own + 7 * H;
    float *sum_ih = own + 8 * H, *sum_b = own + 12 * H;
    #pragma omp for schedule(static)
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf, *rr = rec + r * srec;
        const float *cr = cs + r * scs, *st = stats + 6 * r, *xr = xp + r * sx;
        float *ccr = dc_run + r * sc, *gr = dxp + r * sg, *drr = drec + r * sdrec;
        float mean = st[0], rstd = st[1], cmean = st[2], crstd = st[3];
        float m1 = 0.0f, m2 = 0.0f;
        #pragma omp simd reduction(+:m1, m2)
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k], ds = dh * fr[4 * H + k];
            float xhat = (cr[k] - cmean) * crstd, dy = ds * g_c[k];
            dhs[k] = dh;
            dss[k] = ds;
            m1 += dy;
            m2 += dy * xhat;
            sum_gc[k] += ds * xhat;
            sum_bc[k] += ds;
        }
        float mean1 = m1 / (float)H, mean2 = m2 / (float)H;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float xhat = (cr[k] - cmean) * crstd;
            float dc = ccr[k] + crstd * (dss[k] * g_c[k] - mean1 - xhat * mean2);
            gr[k] = dc * fr[k];
            gr[H + k] = dc * fr[H + k];
            gr[2 * H + k] = dc * fr[2 * H + k];
            gr[3 * H + k] = dhs[k] * fr[3 * H + k];
            ccr[k] = dc * fr[5 * H + k];
        }
        float n1 = 0.0f, n2 = 0.0f;
        #pragma omp simd reduction(+:n1, n2)
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (rr[k] - mean) * rstd, dy = gr[k] * g_hh[k];
            n1 += dy;
            n2 += dy * xhat;
            sum_hh[k] += gr[k] * xhat;
        }
        float nmean1 = n1 / (float)(4 * H), nmean2 = n2 / (float)(4 * H);
        #pragma omp simd
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (rr[k] - mean) * rstd;
            drr[k] = rstd * (gr[k] * g_hh[k] - nmean1 - xhat * nmean2);
        }
        float xmean = st[4], xrstd = st[5], p1 = 0.0f, p2 = 0.0f;
        #pragma omp simd reduction(+:p1, p2)
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (xr[k] - xmean) * xrstd, dy = gr[k] * g_ih[k];
            p1 += dy;
            p2 += dy * xhat;
            sum_ih[k] += gr[k] * xhat;
            sum_b[k] += gr[k];
        }
        float pmean1 = p1 / (float)(4 * H), pmean2 = p2 / (float)(4 * H);
        #pragma omp simd
        for (idx k = 0; k < 4 * H; k++) {
            float xhat = (xr[k] - xmean) * xrstd;
            gr[k] = xrstd * (gr[k] * g_ih[k] - pmean1 - xhat * pmean2);
        }
    }
    }
    for (int t = 0; t < threads; t++) {
        const float *own = scratch + 16 * H * (idx)t;
        for (idx k = 0; k < 4 * H; k++) {
            acc_hh[k] += own[2 * H + k];
            acc_ih[k] += own[8 * H + k];
            acc_b[k] += own[12 * H + k];
        }
        for (idx k = 0; k < H; k++) { acc_gc[k] += own[6 * H + k]; acc_bc[k] += own[7 * H + k]; }
    }
}

/* GRU (reset after), one step. rec = W_hh h + b_hh (r, z, n blocks); h = n + z (h_prev - n);
   fac (may be NULL): [(h - n)(1 - z), (1 - z)(1 - n^2), rec_n r(1 - r), r, z], 5H wide. */
void gru_forward(idx n, idx H, const float *rec, idx srec, const float *xp, idx sx, const float *hp, idx shp,
                 float *h, idx sh, float *fac, idx sf) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *rr = rec + r * srec, *xr = xp + r * sx, *pr = hp + r * shp;
        float *hr = h + r * sh;
        float *fr = fac ? fac + r * sf : NULL;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float rg = sigm(xr[k] + rr[k]), z = sigm(xr[H + k] + rr[H + k]);
            float cand = tanhf(xr[2 * H + k] + rg * rr[2 * H + k]);
            float hv = cand + z * (pr[k] - cand);
            hr[k] = hv;
            if (fr) {
                fr[k] = (hv - cand) * (1.0f - z);
                fr[H + k] = (1.0f - z) * (1.0f - cand * cand);
                fr[2 * H + k] = rr[2 * H + k] * rg * (1.0f - rg);
                fr[3 * H + k] = rg;
                fr[4 * H + k] = z;
            }
        }
    }
}

/* GRU (reset after) backward, one step. dh = dh_run + dout; dxp = [da_r, da_z, da_n]; drec = [da_r, da_z,
   da_n r]; carry <- z dh (the caller adds drec W_hh). carry may be dh_run. */
void gru_backward(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, const float *fac, idx sf,
                  float *dxp, idx sx, float *drec, idx srec, float *carry, idx sc) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf;
        float *xr = dxp + r * sx, *rr = drec + r * srec, *cr = carry + r * sc;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k];
            float dz = dh * fr[k], dn = dh * fr[H + k], dr_ = dn * fr[2 * H + k];
            xr[k] = dr_; xr[H + k] = dz; xr[2 * H + k] = dn;
            rr[k] = dr_; rr[H + k] = dz; rr[2 * H + k] = dn * fr[3 * H + k];
            cr[k] = fr[4 * H + k] * dh;
        }
    }
}

/* GRU (reset before, Cho et al. 2014), first half of a step: in place sigma on the (r, z) pre-activations in
   rz (2H wide); reset = r h_prev. */
void rb_gates(idx n, idx H, float *rz, idx srz, const float *hp, idx shp, float *reset, idx sreset) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        float *zr = rz + r * srz, *er = reset + r * sreset;
        const float *pr = hp + r * shp;
        #pragma omp simd
        for (idx k = 0; k < 2 * H; k++) { zr[k] = sigm(zr[k]); }
        #pragma omp simd
        for (idx k = 0; k < H; k++) { er[k] = zr[k] * pr[k]; }
    }
}

/* Second half: cand = tanh(pre) in place, h = cand + z (h_prev - cand); fac (may be NULL): F_z, F_n and
   F_r = h_prev r(1 - r) into the first 3H of the 5H row whose last 2H hold r, z already (rz points there). */
void rb_forward(idx n, idx H, float *cand, idx scand, const float *rz, idx srz, const float *hp, idx shp,
                float *h, idx sh, float *fac, idx sf) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        float *nr = cand + r * scand, *hr = h + r * sh;
        const float *zr = rz + r * srz, *pr = hp + r * shp;
        float *fr = fac ? fac + r * sf : NULL;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float cv = tanhf(nr[k]), z = zr[H + k], rg = zr[k];
            float hv = cv + z * (pr[k] - cv);
            nr[k] = cv;
            hr[k] = hv;
            if (fr) {
                fr[k] = (hv - cv) * (1.0f - z);
                fr[H + k] = (1.0f - z) * (1.0f - cv * cv);
                fr[2 * H + k] = pr[k] * rg * (1.0f - rg);
            }
        }
    }
}

/* Reset-before backward, first half: dh = dh_run + dout (kept in dh_out); [da_z, da_n] into dxp's last 2H. */
void rb_backward_gates(idx n, idx H, const float *dh_run, idx sr, const float *dout, idx so, const float *fac,
                       idx sf, float *dxp, idx sx, float *dh_out, idx sd) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * sr, *dor = dout + r * so, *fr = fac + r * sf;
        float *xr = dxp + r * sx, *hr = dh_out + r * sd;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            float dh = dr[k] + dor[k];
            hr[k] = dh;
            xr[H + k] = dh * fr[k];
            xr[2 * H + k] = dh * fr[H + k];
        }
    }
}

/* Second half, given d_reset = da_n W_hn: da_r = d_reset F_r into dxp's first H; carry = z dh + r d_reset
   (the caller adds [da_r, da_z] W_hrz). */
void rb_backward_reset(idx n, idx H, const float *d_reset, idx sdr, const float *dh, idx sd, const float *fac,
                       idx sf, float *dxp, idx sx, float *carry, idx sc) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *er = d_reset + r * sdr, *hr = dh + r * sd, *fr = fac + r * sf;
        float *xr = dxp + r * sx, *cr = carry + r * sc;
        #pragma omp simd
        for (idx k = 0; k < H; k++) {
            xr[k] = er[k] * fr[2 * H + k];
            cr[k] = fr[4 * H + k] * hr[k] + fr[3 * H + k] * er[k];
        }
    }
}
/* Whole sequences: the step loops of rnnkit.fastpath with every step's matrix product in C too, through the
   BLAS sgemm_ that torch's own matrix products call (its address is passed in; Fortran ABI, column-major). For
   small steps, where a step's work is a few microseconds and Python's per-step slicing and calls cost more.
   Buffers are contiguous (T, B, F) arrays; rows[t] = n_t, the rows still running at step t (longest first).
   The dimensions are passed to sgemm_ as pointers to 64-bit integers that hold values below 2^31: on a
   little-endian machine the same storage reads correctly as the 32-bit integers of an LP64 BLAS. */
typedef void (*sgemm_fn)(const char *, const char *, const idx *, const idx *, const idx *, const float *,
                         const float *, const idx *, const float *, const idx *, const float *, float *,
                         const idx *);

/* c (n x F, row stride sc) = beta c + a (n x K, row stride sa) w^T, w (F x K) row-major: torch.addmm(c, a, w.t()). */
static void times_wt_rows(sgemm_fn gemm, idx n, idx F, idx K, const float *a, idx sa, const float *w, float beta,
                          float *c, idx sc) {
    const float one = 1.0f;
    gemm("T", "N", &F, &n, &K, &one, w, &K, a, &sa, &beta, c, &sc);
}

static void times_wt(sgemm_fn gemm, idx n, idx F, idx K, const float *a, const float *w, float beta, float *c) {
    times_wt_rows(gemm, n, F, K, a, K, w, beta, c, F);
}

/* c (n x K, row stride sc) = beta c + a (n x F, row stride sa) w, w (F x K) row-major: torch.mm(a, w). */
static void times_w_rows(sgemm_fn gemm, idx n, idx F, idx K, const float *a, idx sa, const float *w, float beta,
                         float *c, idx sc) {
    const float one = 1.0f;
    gemm("N", "N", &K, &n, &F, &one, w, &K, a, &sa, &beta, c, &sc);
}

static void times_w(sgemm_fn gemm, idx n, idx F, idx K, const float *a, const float *w, float beta, float *c) {
    times_w_rows(gemm, n, F, K, a, F, w, beta, c, K);
}

/* Copy columns [0, width) of n rows (row stride sfrom) into rows of stride sto. */
static void copy_rows(idx n, idx width, const float *from, idx sfrom, float *to, idx sto) {
    for (idx r = 0; r < n; r++) {
        for (idx k = 0; k < width; k++) { to[r * sto + k] = from[r * sfrom + k]; }
    }
}

/* GRU (reset after) forward over all steps: rec = W_hh h_{t-1} + b_hh (b may be NULL), then gru_forward.
   hs: (T + 1, B, H) with h_0 in hs[0]; fac (may be NULL): (T, B, 5H); rec: scratch (B, 3H). */
void gru_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                          const float *b, const float *xp, float *hs, float *fac, float *rec) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        if (b) {
            for (idx r = 0; r < n; r++) {
                for (idx k = 0; k < 3 * H; k++) { rec[r * 3 * H + k] = b[k]; }
            }
        }
        times_wt(gemm, n, 3 * H, H, hs + t * B * H, w, b ? 1.0f : 0.0f, rec);
        gru_forward(n, H, rec, 3 * H, xp + t * B * 3 * H, 3 * H, hs + t * B * H, H, hs + (t + 1) * B * H, H,
                    fac ? fac + t * B * 5 * H : NULL, 5 * H);
    }
}

/* Its backward: dh_run (B, H) holds dL/dh_T in, dL/dh_0 out; dout (T, B, H); dxp and drec (T, B, 3H), rows past
   n_t left as they are (the caller zeroes them). */
void gru_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *dout, const float *fac, float *dxp, float *drec, float *dh_run) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        float *dr = drec + t * B * 3 * H;
        gru_backward(n, H, dh_run, H, dout + t * B * H, H, fac + t * B * 5 * H, 5 * H, dxp + t * B * 3 * H, 3 * H,
                     dr, 3 * H, dh_run, H);
        times_w(gemm, n, 3 * H, H, dr, w, 1.0f, dh_run);  /* + dL/d(W_hh h_{t-1}) W_hh */
    }
}

/* Elman RNN, one step in place: h = phi(h) over n rows, phi = relu if relu else tanh. */
static void rnn_activate(idx n, idx H, float *h, idx relu) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        float *hr = h + r * H;
        if (relu) {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { hr[k] = hr[k] > 0.0f ? hr[k] : 0.0f; }
        } else {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { hr[k] = tanhf(hr[k]); }
        }
    }
}

/* Its backward, one step: dpre = (dh_run + dout) phi'(pre), from h = phi(pre): relu' = [h > 0], tanh' = 1 - h^2. */
static void rnn_backward_step(idx n, idx H, const float *dh_run, const float *dout, const float *h, float *dpre,
                              idx relu) {
    ROWS_IN_PARALLEL
    for (idx r = 0; r < n; r++) {
        const float *dr = dh_run + r * H, *dor = dout + r * H, *hr = h + r * H;
        float *pr = dpre + r * H;
        if (relu) {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { pr[k] = hr[k] > 0.0f ? dr[k] + dor[k] : 0.0f; }
        } else {
            #pragma omp simd
            for (idx k = 0; k < H; k++) { pr[k] = (dr[k] + dor[k]) * (1.0f - hr[k] * hr[k]); }
        }
    }
}

/* Elman RNN forward over all steps: h_t = phi(xp_t + W_hh h_{t-1}) (xp holds both biases); hs as in
   gru_sequence_forward. */
void rnn_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                          const float *xp, float *hs, idx relu) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        float *h = hs + (t + 1) * B * H;
        copy_rows(n, H, xp + t * B * H, H, h, H);
        times_wt(gemm, n, H, H, hs + t * B * H, w, 1.0f, h);
        rnn_activate(n, H, h, relu);
    }
}

/* Its backward: dpre (T, B, H): dL/d(pre-activation), rows past n_t left as they are; dh_run as in
   gru_sequence_backward. */
void rnn_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *dout, const float *hs, float *dpre, float *dh_run, idx relu) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        float *dp = dpre + t * B * H;
        rnn_backward_step(n, H, dh_run, dout + t * B * H, hs + (t + 1) * B * H, dp, relu);
        times_w(gemm, n, H, H, dp, w, 0.0f, dh_run);  /* dL/dh_{t-1} = dpre W_hh */
    }
}

/* Reset-before GRU forward over all steps (xp holds b_ih + b_hh): [r, z] = sigma(xp_rz + W_hrz h_{t-1}) and
   reset = r h_{t-1} (rb_gates), cand = xp_n + W_hn reset, then rb_forward. fac (may be NULL): (T, B, 5H), r and z
   in each row's last 2H; resets (may be NULL): (T, B, H), every step's reset kept for dW_hn; scratch: (B, 4H). */
void rb_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w, const float *xp,
                         float *hs, float *fac, float *resets, float *scratch) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        const float *x = xp + t * B * 3 * H, *hp = hs + t * B * H;
        float *f = fac ? fac + t * B * 5 * H : NULL;
        float *rz = f ? f + 3 * H : scratch;
        idx srz = f ? 5 * H : 2 * H;
        float *reset = resets ? resets + t * B * H : scratch + B * 2 * H, *cand = scratch + B * 3 * H;
        copy_rows(n, 2 * H, x, 3 * H, rz, srz);
        times_wt_rows(gemm, n, 2 * H, H, hp, H, w, 1.0f, rz, srz);
        rb_gates(n, H, rz, srz, hp, H, reset, H);
        copy_rows(n, H, x + 2 * H, 3 * H, cand, H);
        times_wt_rows(gemm, n, H, H, reset, H, w + 2 * H * H, 1.0f, cand, H);
        rb_forward(n, H, cand, H, rz, srz, hp, H, hs + (t + 1) * B * H, H, f, 5 * H);
    }
}

/* Its backward: dxp (T, B, 3H), rows past n_t left as they are; dh_run as in gru_sequence_backward; scratch:
   (B, 2H). Per step: rb_backward_gates, d_reset = da_n W_hn, rb_backward_reset, dh_run += [da_r, da_z] W_hrz. */
void rb_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w, const float *dout,
                          const float *fac, float *dxp, float *dh_run, float *scratch) {
    float *dh = scratch, *d_reset = scratch + B * H;
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        const float *f = fac + t * B * 5 * H;
        float *dx = dxp + t * B * 3 * H;
        rb_backward_gates(n, H, dh_run, H, dout + t * B * H, H, f, 5 * H, dx, 3 * H, dh, H);
        times_w_rows(gemm, n, H, H, dx + 2 * H, 3 * H, w + 2 * H * H, 0.0f, d_reset, H);
        rb_backward_reset(n, H, d_reset, H, dh, H, f, 5 * H, dx, 3 * H, dh_run, H);
        times_w_rows(gemm, n, 2 * H, H, dx, 3 * H, w, 1.0f, dh_run, H);
    }
}

/* LSTM forward over all steps: a = xp_t + W_hh h_{t-1}, then lstm_forward. c (B, H): c_0 in, each row's last
   c out; hs as above; fac (may be NULL): (T, B, 6H); a: scratch (B, 4H). */
void lstm_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                           const float *xp, float *hs, float *c, float *fac, float *a) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        const float *x = xp + t * B * 4 * H;
        for (idx k = 0; k < n * 4 * H; k++) { a[k] = x[k]; }
        times_wt(gemm, n, 4 * H, H, hs + t * B * H, w, 1.0f, a);
        lstm_forward(n, H, a, 4 * H, c, H, hs + (t + 1) * B * H, H, fac ? fac + t * B * 6 * H : NULL, 6 * H);
    }
}

/* Its backward: dh_run, dc_run (B, H): dL/dh_T, dL/dc_T in, dL/dh_0, dL/dc_0 out; dg: (T, B, 4H). */
void lstm_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                            const float *dout, const float *fac, float *dg, float *dh_run, float *dc_run) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t];
        float *g = dg + t * B * 4 * H;
        lstm_backward(n, H, dh_run, H, dout + t * B * H, H, dc_run, H, fac + t * B * 6 * H, 6 * H, g, 4 * H);
        times_w(gemm, n, 4 * H, H, g, w, 0.0f, dh_run);  /* dL/dh_{t-1} = dgates W_hh */
    }
}
/* Layer-norm LSTM forward over all steps: rec_t = W_hh h_{t-1} (rec + t rec_step: the steps' own rows, kept for
   the backward, or rec_step 0: one scratch block), then ln_lstm_forward. xp (T, B, 4H) = W_ih x; hs, c as in
   lstm_sequence_forward; fac (T, B, 6H), cs (T, B, H), stats (T, B, 6): NULL without gradients. */
void ln_lstm_sequence_forward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                              const float *xp, const float *g_ih, const float *b, const float *g_hh,
                              const float *g_c, const float *b_c, float eps, float *hs, float *c, float *fac,
                              float *cs, float *stats, float *rec, idx rec_step) {
    for (idx t = 0; t < steps; t++) {
        idx n = rows[t];
        float *r = rec + t * rec_step;
        times_wt(gemm, n, 4 * H, H, hs + t * B * H, w, 0.0f, r);
        ln_lstm_forward(n, H, r, 4 * H, xp + t * B * 4 * H, 4 * H, g_ih, b, g_hh, g_c, b_c, eps, c, H,
                        hs + (t + 1) * B * H, H, fac ? fac + t * B * 6 * H : NULL, 6 * H, cs ? cs + t * B * H : NULL,
                        H, stats ? stats + t * B * 6 : NULL);
    }
}

/* Its backward: dxp (T, B, 4H): dL/d xp; drec (T, B, 4H): dL/d rec_t; dh_run, dc_run as in
   lstm_sequence_backward; the gains' and shifts' gradients added to acc_*; scratch: row_threads(B, H) x 16H,
   zeroed here before each step (see ln_lstm_backward). */
void ln_lstm_sequence_backward(idx steps, const idx *rows, idx B, idx H, sgemm_fn gemm, const float *w,
                               const float *dout, const float *fac, const float *rec, const float *xp,
                               const float *cs, const float *stats, const float *g_ih, const float *g_hh,
                               const float *g_c, float *dxp, float *drec, float *dh_run, float *dc_run,
                               float *acc_ih, float *acc_b, float *acc_hh, float *acc_gc, float *acc_bc,
                               float *scratch) {
    for (idx t = steps - 1; t >= 0; t--) {
        idx n = rows[t], used = (idx)row_threads(n, H) * 16 * H;
        float *dr = drec + t * B * 4 * H;
        for (idx k = 0; k < used; k++) { scratch[k] = 0.0f; }
        ln_lstm_backward(n, H, dh_run, H, dout + t * B * H, H, dc_run, H, fac + t * B * 6 * H, 6 * H,
                         rec + t * B * 4 * H, 4 * H, xp + t * B * 4 * H, 4 * H, cs + t * B * H, H, stats + t * B * 6,
                         g_ih, g_hh, g_c, dxp + t * B * 4 * H, 4 * H, dr, 4 * H, acc_ih, acc_b, acc_hh, acc_gc,
                         acc_bc, scratch);
        times_w(gemm, n, 4 * H, H, dr, w, 0.0f, dh_run);  /* dL/dh_{t-1} = dL/d rec_t W_hh */
    }
}
"""

# Compiled with -ffast-math (glibc declares its vector expf/tanhf only under __FAST_MATH__), but linked in a
# separate step without it: linking a shared library with -ffast-math adds crtfastmath.o, whose constructor
# sets flush-to-zero / denormals-are-zero for the whole process when the library is loaded, changing the
# numerics of torch, numpy and everything else (tests/test_fast_paths.py checks that it does not).
# With -fopenmp the library shares torch's OpenMP runtime (libgomp.so.1 is already loaded by torch, and the
# loader serves the same soname from it); a compiler without OpenMP gets the serial build (-fopenmp-simd).
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=c99"]
_LINK_FLAGS = ["-shared", "-fopenmp"]
_SERIAL_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd", "-fPIC", "-std=c99"]
_SERIAL_LINK_FLAGS = ["-shared"]
_SIGNATURES = {  # argument kinds: i = index (long), p = pointer, f = float
    "lstm_forward": "iipipipipi",
    "lstm_backward": "iipipipipipi",
    "ln_lstm_forward": "iipipipppppfpipipipip",
    "ln_lstm_backward": "ii" + "pi" * 7 + "pppp" + "pi" * 2 + "pppppp",
    "gru_forward": "iipipipipipi",
    "gru_backward": "iipipipipipipi",
    "row_threads": "ii",
    "set_parallel_min": "i",
    "rb_gates": "iipipipi",
    "rb_forward": "iipipipipipi",
    "rb_backward_gates": "iipipipipipi",
    "rb_backward_reset": "iipipipipipi",
    "gru_sequence_forward": "ipii" + "p" * 7,
    "gru_sequence_backward": "ipii" + "p" * 7,
    "lstm_sequence_forward": "ipii" + "p" * 7,
    "lstm_sequence_backward": "ipii" + "p" * 7,
    "ln_lstm_sequence_forward": "ipii" + "p" * 8 + "f" + "p" * 6 + "i",
    "ln_lstm_sequence_backward": "ipii" + "p" * 21,
    "rb_sequence_forward": "ipii" + "p" * 7,
    "rb_sequence_backward": "ipii" + "p" * 7,
    "rnn_sequence_forward": "ipii" + "p" * 4 + "i",
    "rnn_sequence_backward": "ipii" + "p" * 6 + "i",
}
_CTYPES = {"i": ctypes.c_long, "p": ctypes.c_void_p, "f": ctypes.c_float}
_library: ctypes.CDLL | None = None
_tried = False
_sgemm: int | None = None  # the address of torch's sgemm_ (0: not found), see sequences_available


def _cache_dir() -> Path:
    root = os.environ.get("RNNKIT_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnkit"


def _vector_flags() -> list[str]:
    """``-mprefer-vector-width=512`` on a CPU with AVX-512, where GCC otherwise keeps to 256-bit vectors (and
    glibc's 8-wide expf and tanhf). Measured on an Intel Xeon (AVX-512, AMX): the step kernels alone 22-40% faster
    (a GRU step at 64 x 64 12.8 -> 10.0 us, an LSTM step at 64 x 256 30.6 -> 22.0 us); the layers forward+backward,
    two pairs of processes each, 1.00-1.13x (GRU, LSTM with lengths, layer-norm LSTM, reset-before GRU at
    (64, 100, 256), (1, 100, 256), (32, 500, 128) and (64, 40, 64)). Not measured on an AMD CPU. A build that
    refuses the flag is retried without it."""
    return ["-mprefer-vector-width=512"] if "avx512f" in _cpu_flags().split() else []


def _cpu_flags() -> str:
    """What -march=native depends on: the CPU's feature flags (so a shared cache never serves another CPU)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor() + platform.machine()


def _load() -> ctypes.CDLL | None:
    """Compile (or find in the cache) and load the kernels; None if that is not possible here."""
    global build_seconds
    if os.environ.get("RNNKIT_KERNELS", "1") == "0" or sys.platform not in ("linux", "darwin"):
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
        started = time.perf_counter()
        builds = [(_FLAGS, _LINK_FLAGS)] if _torch_uses_libgomp() else []
        wide = _vector_flags()
        attempts = [(flags + extra, link_flags) for flags, link_flags in [*builds, (_SERIAL_FLAGS, _SERIAL_LINK_FLAGS)]
                    for extra in ([wide, []] if wide else [[]])]
        for number, (flags, link_flags) in enumerate(attempts, 1):
            try:
                path = _build(compiler, version, flags, link_flags)
                break
            except subprocess.CalledProcessError:  # e.g. no OpenMP: the next build, at last the plain serial one
                if number == len(attempts):
                    raise
        build_seconds = time.perf_counter() - started if build_seconds is None else build_seconds
        library = ctypes.CDLL(str(path))
        for name, kinds in _SIGNATURES.items():
            function = getattr(library, name)
            function.argtypes = [_CTYPES[kind] for kind in kinds]
            function.restype = ctypes.c_int if name == "row_threads" else None
        return library
    except (OSError, subprocess.SubprocessError, AttributeError):
        return None


def _torch_uses_libgomp() -> bool:
    """Whether torch runs on GNU OpenMP (libgomp, as the Linux wheels do): only then is the OpenMP build one
    runtime with torch's rather than a second thread pool competing for the same cores."""
    try:
        with open("/proc/self/maps") as maps:
            return any("libgomp" in line for line in maps)
    except OSError:
        return False


def _build(compiler: str, version: str, flags: list[str], link_flags: list[str]) -> Path:
    """The library built with these flags: from the cache, or compiled into it."""
    key = hashlib.sha256("\0".join([_SOURCE, *flags, *link_flags, compiler, version, _cpu_flags()]).encode())
    key = key.hexdigest()
    directory = _cache_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"kernels-{key[:20]}.so"
    if not path.exists():
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            source = Path(scratch) / "kernels.c"
            source.write_text(_SOURCE)
            compiled, built = Path(scratch) / "kernels.o", Path(scratch) / "kernels.so"
            subprocess.run([compiler, *flags, "-c", str(source), "-o", str(compiled)], check=True,
                           capture_output=True, timeout=300)
            subprocess.run([compiler, *link_flags, str(compiled), "-o", str(built), "-lm"], check=True,
                           capture_output=True, timeout=300)
            os.replace(built, path)  # atomic: another process sees the whole file or none
    return path


def library() -> ctypes.CDLL | None:
    """The loaded kernels (compiled on the first call in a process if not cached), or None."""
    global _library, _tried
    if not _tried:
        _tried = True
        _library = _load()
    return _library


def available(*tensors: Tensor) -> bool:
    """Whether the kernels can serve these tensors: the library loaded, and all CPU float32, unit inner stride."""
    return (
        library() is not None
        and all(t.device.type == "cpu" and t.dtype == torch.float32 and t.stride(-1) == 1 for t in tensors)
    )


def _find_sgemm() -> int:
    """The address of the BLAS ``sgemm_`` that torch's CPU matrix products call (MKL in the x86 wheels, exported by
    libtorch_cpu), or 0: not found, or it did not compute a test product exactly."""
    directory = Path(torch.__file__).resolve().parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        try:
            function = ctypes.CDLL(str(directory / name)).sgemm_
        except (OSError, AttributeError):
            continue
        # c (5 x 4) = a (5 x 3) w^T for w (4 x 3), row-major, as times_wt in the C source; small integers, so exact
        a = torch.arange(15, dtype=torch.float32).view(5, 3) - 7
        w = torch.arange(12, dtype=torch.float32).view(4, 3) % 5 - 2
        c = torch.full((5, 4), float("nan"))
        size = ctypes.c_long
        one, zero = ctypes.c_float(1.0), ctypes.c_float(0.0)
        f, n, k = size(4), size(5), size(3)
        function(b"T", b"N", ctypes.byref(f), ctypes.byref(n), ctypes.byref(k), ctypes.byref(one),
                 ctypes.c_void_p(w.data_ptr()), ctypes.byref(k), ctypes.c_void_p(a.data_ptr()), ctypes.byref(k),
                 ctypes.byref(zero), ctypes.c_void_p(c.data_ptr()), ctypes.byref(f))
        if torch.equal(c, a @ w.t()):
            return ctypes.cast(function, ctypes.c_void_p).value or 0
    return 0


def sequences_available(*tensors: Tensor) -> bool:
    """Whether the whole-sequence loops can serve these tensors: :func:`available`, torch's ``sgemm_`` found, and
    every tensor contiguous (they index (T, B, F) buffers by step)."""
    global _sgemm
    if _sgemm is None:
        _sgemm = _find_sgemm() if library() is not None else 0
    return bool(_sgemm) and available(*tensors) and all(t.is_contiguous() for t in tensors)


def _sequence(name: str, schedule: list[int], batch: int, hidden: int, weight: Tensor, *arguments) -> None:
    """Call the whole-sequence function ``name``: its common head (steps, n_t, B, H, sgemm_, W_hh), then
    ``arguments`` with tensors as pointers to their first elements and None as NULL."""
    pointers = (0 if a is None else a.data_ptr() if isinstance(a, Tensor) else a for a in arguments)
    getattr(library(), name)(len(schedule), (ctypes.c_long * len(schedule))(*schedule), batch, hidden, _sgemm,
                             weight.data_ptr(), *pointers)


def gru_sequence_forward(schedule, weight, bias, xp, hs, factors, rec) -> None:
    """Steps 0 .. len(schedule) - 1 of xp (T, B, 3H) from hs[0]: hs[1:], factors (T, B, 5H) or None; rec (B, 3H)
    scratch. The pointers are those of the tensors' first elements: pass views that start at the first step."""
    _sequence("gru_sequence_forward", schedule, hs.shape[1], hs.shape[2], weight, bias, xp, hs, factors, rec)


def gru_sequence_backward(schedule, weight, d_out, factors, d_xp, d_rec, d_h_run) -> None:
    _sequence("gru_sequence_backward", schedule, d_out.shape[1], d_out.shape[2], weight, d_out, factors, d_xp, d_rec,
              d_h_run)


def reset_before_sequence_forward(schedule, weight, xp, hs, factors, resets) -> None:
    """Steps of the reset-before GRU from hs[0]: xp (T, B, 3H) -> hs[1:]; factors (T, B, 5H) and resets (T, B, H),
    both None without gradients."""
    batch, hidden = hs.shape[1], hs.shape[2]
    scratch = xp.new_empty(batch, 4 * hidden)
    _sequence("rb_sequence_forward", schedule, batch, hidden, weight, xp, hs, factors, resets, scratch)


def reset_before_sequence_backward(schedule, weight, d_out, factors, d_xp, d_h_run) -> None:
    batch, hidden = d_out.shape[1], d_out.shape[2]
    scratch = d_out.new_empty(batch, 2 * hidden)
    _sequence("rb_sequence_backward", schedule, batch, hidden, weight, d_out, factors, d_xp, d_h_run, scratch)


def rnn_sequence_forward(schedule, weight, xp, hs, relu: bool) -> None:
    """Steps 0 .. len(schedule) - 1 of the Elman RNN from hs[0]: xp (T, B, H) -> hs[1:] (tanh, or relu)."""
    _sequence("rnn_sequence_forward", schedule, hs.shape[1], hs.shape[2], weight, xp, hs, int(relu))


def rnn_sequence_backward(schedule, weight, d_out, hs, d_pre, d_h_run, relu: bool) -> None:
    _sequence("rnn_sequence_backward", schedule, d_out.shape[1], d_out.shape[2], weight, d_out, hs, d_pre, d_h_run,
              int(relu))


def lstm_sequence_forward(schedule, weight, xp, hs, c, factors, a) -> None:
    _sequence("lstm_sequence_forward", schedule, hs.shape[1], hs.shape[2], weight, xp, hs, c, factors, a)


def lstm_sequence_backward(schedule, weight, d_out, factors, d_gates, d_h_run, d_c_run) -> None:
    _sequence("lstm_sequence_backward", schedule, d_out.shape[1], d_out.shape[2], weight, d_out, factors, d_gates,
              d_h_run, d_c_run)


def layer_norm_lstm_sequence_forward(schedule, weight, xp, g_ih, b, g_hh, g_c, b_c, eps, hs, c, factors, cs, stats,
                                     rec, keeps_rec: bool) -> None:
    """Steps of the layer-norm LSTM from hs[0]; ``rec`` (T, B, 4H) keeps every step's W_hh h_{t-1} if
    ``keeps_rec``, else it is one (B, 4H) scratch block."""
    batch, hidden = hs.shape[1], hs.shape[2]
    _sequence("ln_lstm_sequence_forward", schedule, batch, hidden, weight, xp, g_ih, b, g_hh, g_c, b_c, eps, hs, c,
              factors, cs, stats, rec, batch * 4 * hidden if keeps_rec else 0)


def layer_norm_lstm_sequence_backward(schedule, weight, d_out, factors, rec, xp, cs, stats, g_ih, g_hh, g_c, d_xp,
                                      d_rec, d_h_run, d_c_run, acc_ih, acc_b, acc_hh, acc_gc, acc_bc) -> None:
    batch, hidden = d_out.shape[1], d_out.shape[2]
    scratch = d_out.new_empty(library().row_threads(batch, hidden), 16 * hidden)  # zeroed per step in C
    _sequence("ln_lstm_sequence_backward", schedule, batch, hidden, weight, d_out, factors, rec, xp, cs, stats, g_ih,
              g_hh, g_c, d_xp, d_rec, d_h_run, d_c_run, acc_ih, acc_b, acc_hh, acc_gc, acc_bc, scratch)


def _rows(t: Tensor) -> tuple[int, int]:
    """Pointer and row stride (elements) of a 2-D view, or 0, 0 for None."""
    return (0, 0) if t is None else (t.data_ptr(), t.stride(0))


# -- the wrappers: tensors in, the C functions' arguments out ------------------------------------------------


def lstm_forward(a: Tensor, c: Tensor, h: Tensor, factors: Tensor | None) -> None:
    n, hidden = c.shape
    library().lstm_forward(n, hidden, *_rows(a), *_rows(c), *_rows(h), *_rows(factors))


def lstm_backward(d_h_run: Tensor, d_out: Tensor, d_c_run: Tensor, factors: Tensor, d_gates: Tensor) -> None:
    n, hidden = d_h_run.shape
    library().lstm_backward(n, hidden, *_rows(d_h_run), *_rows(d_out), *_rows(d_c_run), *_rows(factors),
                            *_rows(d_gates))


def layer_norm_lstm_forward(rec, xp, g_ih, b, g_hh, g_c, b_c, eps, c, h, factors, cs, stats) -> None:
    n, hidden = c.shape
    library().ln_lstm_forward(n, hidden, *_rows(rec), *_rows(xp), g_ih.data_ptr(), b.data_ptr(), g_hh.data_ptr(),
                              g_c.data_ptr(), b_c.data_ptr(), eps, *_rows(c), *_rows(h), *_rows(factors),
                              *_rows(cs), 0 if stats is None else stats.data_ptr())


def layer_norm_lstm_backward(d_h_run, d_out, d_c_run, factors, rec, xp, cs, stats, g_ih, g_hh, g_c, d_xp, d_rec,
                             acc_ih, acc_b, acc_hh, acc_gc, acc_bc) -> None:
    n, hidden = d_h_run.shape
    scratch = d_h_run.new_zeros(library().row_threads(n, hidden), 16 * hidden)  # per thread, see the C function
    library().ln_lstm_backward(n, hidden, *_rows(d_h_run), *_rows(d_out), *_rows(d_c_run), *_rows(factors),
                               *_rows(rec), *_rows(xp), *_rows(cs), stats.data_ptr(), g_ih.data_ptr(),
                               g_hh.data_ptr(), g_c.data_ptr(), *_rows(d_xp), *_rows(d_rec), acc_ih.data_ptr(),
                               acc_b.data_ptr(), acc_hh.data_ptr(), acc_gc.data_ptr(), acc_bc.data_ptr(),
                               scratch.data_ptr())


def gru_forward(rec: Tensor, xp: Tensor, h_prev: Tensor, h: Tensor, factors: Tensor | None) -> None:
    n, hidden = h.shape
    library().gru_forward(n, hidden, *_rows(rec), *_rows(xp), *_rows(h_prev), *_rows(h), *_rows(factors))


def gru_backward(d_h_run, d_out, factors, d_xp, d_rec, carry) -> None:
    n, hidden = d_h_run.shape
    library().gru_backward(n, hidden, *_rows(d_h_run), *_rows(d_out), *_rows(factors), *_rows(d_xp),
                           *_rows(d_rec), *_rows(carry))


def reset_before_gates(rz: Tensor, h_prev: Tensor, reset: Tensor) -> None:
    n, hidden = h_prev.shape
    library().rb_gates(n, hidden, *_rows(rz), *_rows(h_prev), *_rows(reset))


def reset_before_forward(candidate, rz, h_prev, h, factors) -> None:
    n, hidden = h.shape
    library().rb_forward(n, hidden, *_rows(candidate), *_rows(rz), *_rows(h_prev), *_rows(h), *_rows(factors))


def reset_before_backward_gates(d_h_run, d_out, factors, d_xp, d_h) -> None:
    n, hidden = d_h_run.shape
    library().rb_backward_gates(n, hidden, *_rows(d_h_run), *_rows(d_out), *_rows(factors), *_rows(d_xp),
                                *_rows(d_h))


def reset_before_backward_reset(d_reset, d_h, factors, d_xp, carry) -> None:
    n, hidden = d_h.shape
    library().rb_backward_reset(n, hidden, *_rows(d_reset), *_rows(d_h), *_rows(factors), *_rows(d_xp),
                                *_rows(carry))
