// rnnkit's native kernels as typed torch operators: torch.ops.rnnkit.<name>.
//
// Each operator is declared once, by its schema below, which the dispatcher checks every call against (a wrong
// argument raises a RuntimeError naming the operator and the argument) and which torch checks against the C++
// function's own signature when it is registered. Each function then checks the tensors' dtype, device, shapes
// and strides against what its kernel (kernels.h) will read and write, so that a wrong call raises instead of
// reading or writing outside a tensor.
//
// The operators are registered by rnnkit_register_operators(), called by rnnkit/fast/native.py after loading the
// library, rather than by TORCH_LIBRARY's static initialiser: a registration error (a schema that disagrees with
// its function) then comes back to Python as a message instead of terminating the process during dlopen.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <cstring>
#include <optional>
#include <string>

#include "kernels.h"

// The operators' namespace: torch.ops.rnnkit. benchmarks/kernel_variants.py builds a variant of the kernels
// under another one, so that both can be timed side by side in one process.
#ifndef RNNKIT_OPERATOR_NAMESPACE
#define RNNKIT_OPERATOR_NAMESPACE "rnnkit"
#endif

namespace {

using at::Tensor;
using OptionalTensor = std::optional<Tensor>;

// -- argument checks --------------------------------------------------------------------------------------------

void check_float_cpu(const Tensor& t, const char* name) {
    TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "rnnkit: ", name,
                " must be a float32 CPU tensor, got ", t.scalar_type(), " on ", t.device());
}

// Rows [0, n) of a matrix view at least `width` wide with unit column stride: its data and row stride.
struct Rows {
    float* data;
    idx stride;
};

Rows rows(const Tensor& t, const char* name, int64_t n, int64_t width) {
    check_float_cpu(t, name);
    TORCH_CHECK(t.dim() == 2 && t.size(0) == n && t.size(1) >= width && (t.size(1) == 0 || t.stride(1) == 1),
                "rnnkit: ", name, " must be ", n, " rows of at least ", width, " values with unit column stride, got",
                " shape ", t.sizes(), " strides ", t.strides());
    return {t.data_ptr<float>(), t.stride(0)};
}

Rows rows(const OptionalTensor& t, const char* name, int64_t n, int64_t width) {
    return t.has_value() ? rows(*t, name, n, width) : Rows{nullptr, 0};
}

// A contiguous vector of `size` values.
float* vector(const Tensor& t, const char* name, int64_t size) {
    check_float_cpu(t, name);
    TORCH_CHECK(t.dim() == 1 && t.size(0) == size && t.is_contiguous(), "rnnkit: ", name, " must be a contiguous (",
                size, ",) vector, got shape ", t.sizes());
    return t.data_ptr<float>();
}

// A contiguous (K, batch, width) buffer of at least `steps` steps, read from its first element.
float* steps(const Tensor& t, const char* name, int64_t count, int64_t batch, int64_t width) {
    check_float_cpu(t, name);
    TORCH_CHECK(t.dim() == 3 && t.size(0) >= count && t.size(1) == batch && t.size(2) == width && t.is_contiguous(),
                "rnnkit: ", name, " must be a contiguous buffer of at least ", count, " steps of (", batch, ", ",
                width, "), got shape ", t.sizes(), " strides ", t.strides());
    return t.data_ptr<float>();
}

float* steps(const OptionalTensor& t, const char* name, int64_t count, int64_t batch, int64_t width) {
    return t.has_value() ? steps(*t, name, count, batch, width) : nullptr;
}

// A contiguous (batch, width) matrix.
float* matrix(const Tensor& t, const char* name, int64_t batch, int64_t width) {
    check_float_cpu(t, name);
    TORCH_CHECK(t.dim() == 2 && t.size(0) == batch && t.size(1) == width && t.is_contiguous(), "rnnkit: ", name,
                " must be a contiguous (", batch, ", ", width, ") matrix, got shape ", t.sizes(), " strides ",
                t.strides());
    return t.data_ptr<float>();
}

// The schedule n_0 >= n_1 >= ... of a whole-sequence loop: each in [1, batch].
void check_schedule(c10::IntArrayRef schedule, int64_t batch) {
    int64_t previous = batch;
    for (int64_t n : schedule) {
        TORCH_CHECK(n >= 1 && n <= previous, "rnnkit: a schedule holds non-increasing row counts in [1, ", batch,
                    "], got ", schedule);
        previous = n;
    }
}

// -- torch's BLAS -----------------------------------------------------------------------------------------------

// The sgemm_ that libtorch_cpu exports (MKL in the x86-64 wheels), or nullptr: not exported, or it did not compute
// a test product exactly (c = a w^T for small integers, as the loops call it).
sgemm_fn find_sgemm() {
    void* library = dlopen("libtorch_cpu.so", RTLD_LAZY | RTLD_NOLOAD);
    if (library == nullptr) library = dlopen("libtorch_cpu.dylib", RTLD_LAZY | RTLD_NOLOAD);
    void* symbol = library != nullptr ? dlsym(library, "sgemm_") : nullptr;
    if (symbol == nullptr) return nullptr;
    sgemm_fn gemm = reinterpret_cast<sgemm_fn>(symbol);
    float a[15], w[12], c[20];
    for (int i = 0; i < 15; i++) a[i] = static_cast<float>(i - 7);
    for (int i = 0; i < 12; i++) w[i] = static_cast<float>(i % 5 - 2);
    for (float& value : c) value = -12345.0f;
    const idx f = 4, n = 5, k = 3;
    const float one = 1.0f, zero = 0.0f;
    gemm("T", "N", &f, &n, &k, &one, w, &k, a, &k, &zero, c, &f);  // c (5 x 4) = a (5 x 3) w (4 x 3)^T
    for (int row = 0; row < 5; row++) {
        for (int column = 0; column < 4; column++) {
            float expected = 0.0f;
            for (int j = 0; j < 3; j++) expected += a[row * 3 + j] * w[column * 3 + j];
            if (c[row * 4 + column] != expected) return nullptr;
        }
    }
    return gemm;
}

sgemm_fn blas() {
    static const sgemm_fn gemm = find_sgemm();
    return gemm;
}

sgemm_fn checked_blas() {
    sgemm_fn gemm = blas();
    TORCH_CHECK(gemm != nullptr, "rnnkit: torch's sgemm_ was not found; the step loops in C are not available");
    return gemm;
}

}  // namespace

// The operators: one function per schema in define(), named as the operator; each calls its kernel (::name).
namespace ops {

// -- utilities --------------------------------------------------------------------------------------------------

bool has_blas() { return blas() != nullptr; }

int64_t row_threads(int64_t n, int64_t hidden) { return ::row_threads(n, hidden); }

void set_parallel_threshold(int64_t values) {
    TORCH_CHECK(values >= 0, "rnnkit: the parallel threshold is a number of values >= 0, got ", values);
    ::set_parallel_min(values);
}

// -- one step ---------------------------------------------------------------------------------------------------

void lstm_step(const Tensor& a, const Tensor& c, const Tensor& h, const OptionalTensor& factors) {
    int64_t n = c.size(0), H = c.dim() == 2 ? c.size(1) : 0;
    Rows ra = rows(a, "a", n, 4 * H), rc = rows(c, "c", n, H), rh = rows(h, "h", n, H);
    Rows rf = rows(factors, "factors", n, 6 * H);
    ::lstm_forward(n, H, ra.data, ra.stride, rc.data, rc.stride, rh.data, rh.stride, rf.data, rf.stride);
}

void lstm_step_backward(const Tensor& d_h_run, const Tensor& d_out, const Tensor& d_c_run, const Tensor& factors,
                        const Tensor& d_gates) {
    int64_t n = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    Rows rr = rows(d_h_run, "d_h_run", n, H), ro = rows(d_out, "d_out", n, H), rc = rows(d_c_run, "d_c_run", n, H);
    Rows rf = rows(factors, "factors", n, 6 * H), rg = rows(d_gates, "d_gates", n, 4 * H);
    ::lstm_backward(n, H, rr.data, rr.stride, ro.data, ro.stride, rc.data, rc.stride, rf.data, rf.stride, rg.data,
                  rg.stride);
}

void layer_norm_lstm_step(const Tensor& rec, const Tensor& xp, const Tensor& g_ih, const Tensor& b,
                          const Tensor& g_hh, const Tensor& g_c, const Tensor& b_c, double eps, const Tensor& c,
                          const Tensor& h, const OptionalTensor& factors, const OptionalTensor& cs,
                          const OptionalTensor& stats) {
    int64_t n = c.size(0), H = c.dim() == 2 ? c.size(1) : 0;
    Rows rrec = rows(rec, "rec", n, 4 * H), rx = rows(xp, "xp", n, 4 * H), rc = rows(c, "c", n, H);
    Rows rh = rows(h, "h", n, H), rf = rows(factors, "factors", n, 6 * H), rcs = rows(cs, "cs", n, H);
    Rows rs = rows(stats, "stats", n, 6);
    TORCH_CHECK(!stats.has_value() || rs.stride == 6, "rnnkit: stats must be contiguous (n, 6)");
    ::ln_lstm_forward(n, H, rrec.data, rrec.stride, rx.data, rx.stride, vector(g_ih, "g_ih", 4 * H),
                    vector(b, "b", 4 * H), vector(g_hh, "g_hh", 4 * H), vector(g_c, "g_c", H), vector(b_c, "b_c", H),
                    static_cast<float>(eps), rc.data, rc.stride, rh.data, rh.stride, rf.data, rf.stride, rcs.data,
                    rcs.stride, rs.data);
}

void layer_norm_lstm_step_backward(const Tensor& d_h_run, const Tensor& d_out, const Tensor& d_c_run,
                                   const Tensor& factors, const Tensor& rec, const Tensor& xp, const Tensor& cs,
                                   const Tensor& stats, const Tensor& g_ih, const Tensor& g_hh, const Tensor& g_c,
                                   const Tensor& d_xp, const Tensor& d_rec, const Tensor& acc_ih,
                                   const Tensor& acc_b, const Tensor& acc_hh, const Tensor& acc_gc,
                                   const Tensor& acc_bc) {
    int64_t n = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    Rows rr = rows(d_h_run, "d_h_run", n, H), ro = rows(d_out, "d_out", n, H), rc = rows(d_c_run, "d_c_run", n, H);
    Rows rf = rows(factors, "factors", n, 6 * H), rrec = rows(rec, "rec", n, 4 * H), rx = rows(xp, "xp", n, 4 * H);
    Rows rcs = rows(cs, "cs", n, H), rs = rows(stats, "stats", n, 6), rdx = rows(d_xp, "d_xp", n, 4 * H);
    Rows rdr = rows(d_rec, "d_rec", n, 4 * H);
    TORCH_CHECK(rs.stride == 6, "rnnkit: stats must be contiguous (n, 6)");
    // per thread: 16H zeros (see ln_lstm_backward)
    Tensor scratch = at::zeros({::row_threads(n, H), 16 * H}, d_h_run.options());
    ::ln_lstm_backward(n, H, rr.data, rr.stride, ro.data, ro.stride, rc.data, rc.stride, rf.data, rf.stride, rrec.data,
                     rrec.stride, rx.data, rx.stride, rcs.data, rcs.stride, rs.data, vector(g_ih, "g_ih", 4 * H),
                     vector(g_hh, "g_hh", 4 * H), vector(g_c, "g_c", H), rdx.data, rdx.stride, rdr.data, rdr.stride,
                     vector(acc_ih, "acc_ih", 4 * H), vector(acc_b, "acc_b", 4 * H), vector(acc_hh, "acc_hh", 4 * H),
                     vector(acc_gc, "acc_gc", H), vector(acc_bc, "acc_bc", H), scratch.data_ptr<float>());
}

void gru_step(const Tensor& rec, const Tensor& xp, const Tensor& h_prev, const Tensor& h,
              const OptionalTensor& factors) {
    int64_t n = h.size(0), H = h.dim() == 2 ? h.size(1) : 0;
    Rows rr = rows(rec, "rec", n, 3 * H), rx = rows(xp, "xp", n, 3 * H), rp = rows(h_prev, "h_prev", n, H);
    Rows rh = rows(h, "h", n, H), rf = rows(factors, "factors", n, 5 * H);
    ::gru_forward(n, H, rr.data, rr.stride, rx.data, rx.stride, rp.data, rp.stride, rh.data, rh.stride, rf.data,
                rf.stride);
}

void gru_step_backward(const Tensor& d_h_run, const Tensor& d_out, const Tensor& factors, const Tensor& d_xp,
                       const Tensor& d_rec, const Tensor& carry) {
    int64_t n = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    Rows rr = rows(d_h_run, "d_h_run", n, H), ro = rows(d_out, "d_out", n, H), rf = rows(factors, "factors", n, 5 * H);
    Rows rx = rows(d_xp, "d_xp", n, 3 * H), rd = rows(d_rec, "d_rec", n, 3 * H), rc = rows(carry, "carry", n, H);
    ::gru_backward(n, H, rr.data, rr.stride, ro.data, ro.stride, rf.data, rf.stride, rx.data, rx.stride, rd.data,
                 rd.stride, rc.data, rc.stride);
}

void reset_before_gates(const Tensor& rz, const Tensor& h_prev, const Tensor& reset) {
    int64_t n = h_prev.size(0), H = h_prev.dim() == 2 ? h_prev.size(1) : 0;
    Rows rg = rows(rz, "rz", n, 2 * H), rp = rows(h_prev, "h_prev", n, H), rr = rows(reset, "reset", n, H);
    ::rb_gates(n, H, rg.data, rg.stride, rp.data, rp.stride, rr.data, rr.stride);
}

void reset_before_step(const Tensor& candidate, const Tensor& rz, const Tensor& h_prev, const Tensor& h,
                       const OptionalTensor& factors) {
    int64_t n = h.size(0), H = h.dim() == 2 ? h.size(1) : 0;
    Rows rc = rows(candidate, "candidate", n, H), rg = rows(rz, "rz", n, 2 * H), rp = rows(h_prev, "h_prev", n, H);
    Rows rh = rows(h, "h", n, H), rf = rows(factors, "factors", n, 3 * H);
    ::rb_forward(n, H, rc.data, rc.stride, rg.data, rg.stride, rp.data, rp.stride, rh.data, rh.stride, rf.data,
               rf.stride);
}

void reset_before_step_backward_gates(const Tensor& d_h_run, const Tensor& d_out, const Tensor& factors,
                                      const Tensor& d_xp, const Tensor& d_h) {
    int64_t n = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    Rows rr = rows(d_h_run, "d_h_run", n, H), ro = rows(d_out, "d_out", n, H), rf = rows(factors, "factors", n, 5 * H);
    Rows rx = rows(d_xp, "d_xp", n, 3 * H), rd = rows(d_h, "d_h", n, H);
    ::rb_backward_gates(n, H, rr.data, rr.stride, ro.data, ro.stride, rf.data, rf.stride, rx.data, rx.stride, rd.data,
                      rd.stride);
}

void reset_before_step_backward_reset(const Tensor& d_reset, const Tensor& d_h, const Tensor& factors,
                                      const Tensor& d_xp, const Tensor& carry) {
    int64_t n = d_h.size(0), H = d_h.dim() == 2 ? d_h.size(1) : 0;
    Rows rr = rows(d_reset, "d_reset", n, H), rd = rows(d_h, "d_h", n, H), rf = rows(factors, "factors", n, 5 * H);
    Rows rx = rows(d_xp, "d_xp", n, 3 * H), rc = rows(carry, "carry", n, H);
    ::rb_backward_reset(n, H, rr.data, rr.stride, rd.data, rd.stride, rf.data, rf.stride, rx.data, rx.stride, rc.data,
                      rc.stride);
}

// -- whole sequences --------------------------------------------------------------------------------------------
// hs (>= K + 1 steps, B, H) holds h_0 in its first step; the other buffers start at the loop's first step.

void gru_sequence(c10::IntArrayRef schedule, const Tensor& w, const OptionalTensor& b, const Tensor& xp,
                  const Tensor& hs, const OptionalTensor& factors, const Tensor& rec) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = hs.size(1), H = hs.dim() == 3 ? hs.size(2) : 0;
    check_schedule(schedule, B);
    ::gru_sequence_forward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 3 * H, H),
                         b.has_value() ? vector(*b, "b", 3 * H) : nullptr, steps(xp, "xp", K, B, 3 * H),
                         steps(hs, "hs", K + 1, B, H), steps(factors, "factors", K, B, 5 * H),
                         matrix(rec, "rec", B, 3 * H));
}

void gru_sequence_backward(c10::IntArrayRef schedule, const Tensor& w, const Tensor& d_out, const Tensor& factors,
                            const Tensor& d_xp, const Tensor& d_rec, const Tensor& d_h_run) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    check_schedule(schedule, B);
    ::gru_sequence_backward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 3 * H, H),
                          steps(d_out, "d_out", K, B, H), steps(factors, "factors", K, B, 5 * H),
                          steps(d_xp, "d_xp", K, B, 3 * H), steps(d_rec, "d_rec", K, B, 3 * H),
                          matrix(d_h_run, "d_h_run", B, H));
}

void rnn_sequence(c10::IntArrayRef schedule, const Tensor& w, const Tensor& xp, const Tensor& hs, bool relu) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = hs.size(1), H = hs.dim() == 3 ? hs.size(2) : 0;
    check_schedule(schedule, B);
    ::rnn_sequence_forward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", H, H), steps(xp, "xp", K, B, H),
                         steps(hs, "hs", K + 1, B, H), relu ? 1 : 0);
}

void rnn_sequence_backward(c10::IntArrayRef schedule, const Tensor& w, const Tensor& d_out, const Tensor& hs,
                            const Tensor& d_pre, const Tensor& d_h_run, bool relu) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    check_schedule(schedule, B);
    ::rnn_sequence_backward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", H, H),
                          steps(d_out, "d_out", K, B, H), steps(hs, "hs", K + 1, B, H),
                          steps(d_pre, "d_pre", K, B, H), matrix(d_h_run, "d_h_run", B, H), relu ? 1 : 0);
}

void reset_before_sequence(c10::IntArrayRef schedule, const Tensor& w, const Tensor& xp, const Tensor& hs,
                           const OptionalTensor& factors, const OptionalTensor& resets) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = hs.size(1), H = hs.dim() == 3 ? hs.size(2) : 0;
    check_schedule(schedule, B);
    Tensor scratch = at::empty({B, 4 * H}, hs.options());
    ::rb_sequence_forward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 3 * H, H),
                        steps(xp, "xp", K, B, 3 * H), steps(hs, "hs", K + 1, B, H),
                        steps(factors, "factors", K, B, 5 * H), steps(resets, "resets", K, B, H),
                        scratch.data_ptr<float>());
}

void reset_before_sequence_backward(c10::IntArrayRef schedule, const Tensor& w, const Tensor& d_out,
                                    const Tensor& factors, const Tensor& d_xp, const Tensor& d_h_run) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    check_schedule(schedule, B);
    Tensor scratch = at::empty({B, 2 * H}, d_h_run.options());
    ::rb_sequence_backward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 3 * H, H),
                         steps(d_out, "d_out", K, B, H), steps(factors, "factors", K, B, 5 * H),
                         steps(d_xp, "d_xp", K, B, 3 * H), matrix(d_h_run, "d_h_run", B, H), scratch.data_ptr<float>());
}

void lstm_sequence(c10::IntArrayRef schedule, const Tensor& w, const Tensor& xp, const Tensor& hs, const Tensor& c,
                   const OptionalTensor& factors) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = hs.size(1), H = hs.dim() == 3 ? hs.size(2) : 0;
    check_schedule(schedule, B);
    Tensor scratch = at::empty({B, 4 * H}, hs.options());  // one step's pre-activations
    ::lstm_sequence_forward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 4 * H, H),
                          steps(xp, "xp", K, B, 4 * H), steps(hs, "hs", K + 1, B, H), matrix(c, "c", B, H),
                          steps(factors, "factors", K, B, 6 * H), scratch.data_ptr<float>());
}

void lstm_sequence_backward(c10::IntArrayRef schedule, const Tensor& w, const Tensor& d_out, const Tensor& factors,
                             const Tensor& d_gates, const Tensor& d_h_run, const Tensor& d_c_run) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    check_schedule(schedule, B);
    ::lstm_sequence_backward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 4 * H, H),
                           steps(d_out, "d_out", K, B, H), steps(factors, "factors", K, B, 6 * H),
                           steps(d_gates, "d_gates", K, B, 4 * H), matrix(d_h_run, "d_h_run", B, H),
                           matrix(d_c_run, "d_c_run", B, H));
}

void layer_norm_lstm_sequence(c10::IntArrayRef schedule, const Tensor& w, const Tensor& xp, const Tensor& g_ih,
                              const Tensor& b, const Tensor& g_hh, const Tensor& g_c, const Tensor& b_c, double eps,
                              const Tensor& hs, const Tensor& c, const OptionalTensor& factors,
                              const OptionalTensor& cs, const OptionalTensor& stats, const Tensor& rec,
                              bool keeps_rec) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = hs.size(1), H = hs.dim() == 3 ? hs.size(2) : 0;
    check_schedule(schedule, B);
    // rec: every step's W_hh h_{t-1} (K, B, 4H) kept for the backward, or one (B, 4H) scratch block
    float* rec_data = keeps_rec ? steps(rec, "rec", K, B, 4 * H) : matrix(rec, "rec", B, 4 * H);
    ::ln_lstm_sequence_forward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 4 * H, H),
                             steps(xp, "xp", K, B, 4 * H), vector(g_ih, "g_ih", 4 * H), vector(b, "b", 4 * H),
                             vector(g_hh, "g_hh", 4 * H), vector(g_c, "g_c", H), vector(b_c, "b_c", H),
                             static_cast<float>(eps), steps(hs, "hs", K + 1, B, H), matrix(c, "c", B, H),
                             steps(factors, "factors", K, B, 6 * H), steps(cs, "cs", K, B, H),
                             steps(stats, "stats", K, B, 6), rec_data, keeps_rec ? B * 4 * H : 0);
}

void layer_norm_lstm_sequence_backward(c10::IntArrayRef schedule, const Tensor& w, const Tensor& d_out,
                                       const Tensor& factors, const Tensor& rec, const Tensor& xp, const Tensor& cs,
                                       const Tensor& stats, const Tensor& g_ih, const Tensor& g_hh, const Tensor& g_c,
                                       const Tensor& d_xp, const Tensor& d_rec, const Tensor& d_h_run,
                                       const Tensor& d_c_run, const Tensor& acc_ih, const Tensor& acc_b,
                                       const Tensor& acc_hh, const Tensor& acc_gc, const Tensor& acc_bc) {
    int64_t K = static_cast<int64_t>(schedule.size()), B = d_h_run.size(0), H = d_h_run.dim() == 2 ? d_h_run.size(1) : 0;
    check_schedule(schedule, B);
    Tensor scratch = at::empty({::row_threads(B, H), 16 * H}, d_h_run.options());  // zeroed per step in C
    ::ln_lstm_sequence_backward(K, schedule.data(), B, H, checked_blas(), matrix(w, "w", 4 * H, H),
                              steps(d_out, "d_out", K, B, H), steps(factors, "factors", K, B, 6 * H),
                              steps(rec, "rec", K, B, 4 * H), steps(xp, "xp", K, B, 4 * H), steps(cs, "cs", K, B, H),
                              steps(stats, "stats", K, B, 6), vector(g_ih, "g_ih", 4 * H),
                              vector(g_hh, "g_hh", 4 * H), vector(g_c, "g_c", H), steps(d_xp, "d_xp", K, B, 4 * H),
                              steps(d_rec, "d_rec", K, B, 4 * H), matrix(d_h_run, "d_h_run", B, H),
                              matrix(d_c_run, "d_c_run", B, H), vector(acc_ih, "acc_ih", 4 * H),
                              vector(acc_b, "acc_b", 4 * H), vector(acc_hh, "acc_hh", 4 * H),
                              vector(acc_gc, "acc_gc", H), vector(acc_bc, "acc_bc", H), scratch.data_ptr<float>());
}

}  // namespace ops

namespace {

void define(torch::Library& library) {
    // Utilities
    library.def("has_blas() -> bool", &ops::has_blas);
    library.def("row_threads(int n, int hidden) -> int", &ops::row_threads);
    library.def("set_parallel_threshold(int values) -> ()", &ops::set_parallel_threshold);
    // One step: the elementwise work between the step's products (the loop in Python)
    library.def("lstm_step(Tensor a, Tensor(a!) c, Tensor(b!) h, Tensor(c!)? factors) -> ()", &ops::lstm_step);
    library.def("lstm_step_backward(Tensor d_h_run, Tensor d_out, Tensor(a!) d_c_run, Tensor factors, "
                "Tensor(b!) d_gates) -> ()", &ops::lstm_step_backward);
    library.def("layer_norm_lstm_step(Tensor rec, Tensor xp, Tensor g_ih, Tensor b, Tensor g_hh, Tensor g_c, "
                "Tensor b_c, float eps, Tensor(a!) c, Tensor(b!) h, Tensor(c!)? factors, Tensor(d!)? cs, "
                "Tensor(e!)? stats) -> ()", &ops::layer_norm_lstm_step);
    library.def("layer_norm_lstm_step_backward(Tensor d_h_run, Tensor d_out, Tensor(a!) d_c_run, Tensor factors, "
                "Tensor rec, Tensor xp, Tensor cs, Tensor stats, Tensor g_ih, Tensor g_hh, Tensor g_c, "
                "Tensor(b!) d_xp, Tensor(c!) d_rec, Tensor(d!) acc_ih, Tensor(e!) acc_b, Tensor(f!) acc_hh, "
                "Tensor(g!) acc_gc, Tensor(h!) acc_bc) -> ()", &ops::layer_norm_lstm_step_backward);
    library.def("gru_step(Tensor rec, Tensor xp, Tensor h_prev, Tensor(a!) h, Tensor(b!)? factors) -> ()", &ops::gru_step);
    library.def("gru_step_backward(Tensor d_h_run, Tensor d_out, Tensor factors, Tensor(a!) d_xp, Tensor(b!) d_rec, "
                "Tensor(c!) carry) -> ()", &ops::gru_step_backward);
    library.def("reset_before_gates(Tensor(a!) rz, Tensor h_prev, Tensor(b!) reset) -> ()", &ops::reset_before_gates);
    library.def("reset_before_step(Tensor(a!) candidate, Tensor rz, Tensor h_prev, Tensor(b!) h, "
                "Tensor(c!)? factors) -> ()", &ops::reset_before_step);
    library.def("reset_before_step_backward_gates(Tensor d_h_run, Tensor d_out, Tensor factors, Tensor(a!) d_xp, "
                "Tensor(b!) d_h) -> ()", &ops::reset_before_step_backward_gates);
    library.def("reset_before_step_backward_reset(Tensor d_reset, Tensor d_h, Tensor factors, Tensor(a!) d_xp, "
                "Tensor(b!) carry) -> ()", &ops::reset_before_step_backward_reset);
    // Whole sequences: the step loop in C, products included
    library.def("gru_sequence(int[] schedule, Tensor w, Tensor? b, Tensor xp, Tensor(a!) hs, Tensor(b!)? factors, "
                "Tensor(c!) rec) -> ()", &ops::gru_sequence);
    library.def("gru_sequence_backward(int[] schedule, Tensor w, Tensor d_out, Tensor factors, Tensor(a!) d_xp, "
                "Tensor(b!) d_rec, Tensor(c!) d_h_run) -> ()", &ops::gru_sequence_backward);
    library.def("rnn_sequence(int[] schedule, Tensor w, Tensor xp, Tensor(a!) hs, bool relu) -> ()", &ops::rnn_sequence);
    library.def("rnn_sequence_backward(int[] schedule, Tensor w, Tensor d_out, Tensor hs, Tensor(a!) d_pre, "
                "Tensor(b!) d_h_run, bool relu) -> ()", &ops::rnn_sequence_backward);
    library.def("reset_before_sequence(int[] schedule, Tensor w, Tensor xp, Tensor(a!) hs, Tensor(b!)? factors, "
                "Tensor(c!)? resets) -> ()", &ops::reset_before_sequence);
    library.def("reset_before_sequence_backward(int[] schedule, Tensor w, Tensor d_out, Tensor factors, "
                "Tensor(a!) d_xp, Tensor(b!) d_h_run) -> ()", &ops::reset_before_sequence_backward);
    library.def("lstm_sequence(int[] schedule, Tensor w, Tensor xp, Tensor(a!) hs, Tensor(b!) c, "
                "Tensor(c!)? factors) -> ()", &ops::lstm_sequence);
    library.def("lstm_sequence_backward(int[] schedule, Tensor w, Tensor d_out, Tensor factors, Tensor(a!) d_gates, "
                "Tensor(b!) d_h_run, Tensor(c!) d_c_run) -> ()", &ops::lstm_sequence_backward);
    library.def("layer_norm_lstm_sequence(int[] schedule, Tensor w, Tensor xp, Tensor g_ih, Tensor b, Tensor g_hh, "
                "Tensor g_c, Tensor b_c, float eps, Tensor(a!) hs, Tensor(b!) c, Tensor(c!)? factors, "
                "Tensor(d!)? cs, Tensor(e!)? stats, Tensor(f!) rec, bool keeps_rec) -> ()", &ops::layer_norm_lstm_sequence);
    library.def("layer_norm_lstm_sequence_backward(int[] schedule, Tensor w, Tensor d_out, Tensor factors, "
                "Tensor rec, Tensor xp, Tensor cs, Tensor stats, Tensor g_ih, Tensor g_hh, Tensor g_c, "
                "Tensor(a!) d_xp, Tensor(b!) d_rec, Tensor(c!) d_h_run, Tensor(d!) d_c_run, Tensor(e!) acc_ih, "
                "Tensor(f!) acc_b, Tensor(g!) acc_hh, Tensor(h!) acc_gc, Tensor(i!) acc_bc) -> ()",
                &ops::layer_norm_lstm_sequence_backward);
}

}  // namespace

// Register the operators in their namespace; nullptr on success, else the error's message. Once per process (a
// namespace is defined once).
extern "C" __attribute__((visibility("default"))) const char* rnnkit_register_operators() {
    static std::string error;
    try {
        static torch::Library library(torch::Library::DEF, RNNKIT_OPERATOR_NAMESPACE, std::nullopt, __FILE__,
                                      __LINE__);
        define(library);
        return nullptr;
    } catch (const std::exception& exception) {
        error = exception.what();
        return error.c_str();
    }
}
