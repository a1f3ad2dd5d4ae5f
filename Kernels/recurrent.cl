// recurrent.cl — fused LSTM and GRU cell updates and their backward steps (fp32, OpenCL C 1.2).
//
// Contract (RecurrentBackend in Sources/OpalCore/Backend+Recurrent.swift; CPU reference in
// Sources/OpalCPU/Recurrent.swift). B = batch, H = hidden size, all buffers dense row-major, σ = logistic.
//   lstm_cell_forward   gates [B, 4H] (i | f | g | o pre-activations), cell c_{t−1} [B, H]
//                       → hidden_out h_t, cell_out c_t [B, H], act [B, 5H] (σi | σf | tanh g | σo | tanh c_t)
//                       c_t = σf·c_{t−1} + σi·tanh g;  h_t = σo·tanh c_t
//   lstm_cell_backward  dhidden_out dh_t, dcell_out dc_t [B, H], cell, act → dgates [B, 4H], dcell [B, H]
//                       dc = dc_t + dh_t·σo·(1 − tanh²c_t)
//                       dgates = (dc·tanh g·σi(1−σi) | dc·c_{t−1}·σf(1−σf) | dc·σi·(1−tanh²g) | dh_t·tanh c_t·σo(1−σo))
//                       dcell = dc·σf
//   gru_cell_forward    xi, xh [B, 3H] (r | z | n), hidden h_{t−1} [B, H] → out h_t [B, H], act [B, 3H] (r | z | n)
//                       r = σ(xi_r + xh_r);  z = σ(xi_z + xh_z);  n = tanh(xi_n + r·xh_n);  h_t = (1 − z)·n + z·h_{t−1}
//   gru_cell_backward   dout [B, H], xh, hidden, act → dxi, dxh [B, 3H], dhidden [B, H]
//                       n̂ = dh·(1 − z)(1 − n²);  ẑ = dh·(h_{t−1} − n)·z(1 − z);  r̂ = n̂·xh_n·r(1 − r)
//                       dxi = (r̂ | ẑ | n̂);  dxh = (r̂ | ẑ | n̂·r);  dhidden = dh·z
//
// Launch geometry: 1-D, one work-item per unit (b, j) of the B·H units, global = B·H rounded up to a
// multiple of WGS, local = WGS; items past the end return. Consecutive items take consecutive j of one
// row, so every gate read and state write is coalesced; each item reads and writes only its own unit.

#ifndef WGS
#define WGS 256
#endif

inline float opal_sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }

__kernel void lstm_cell_forward(const __global float* gates, const __global float* cell, __global float* hidden_out,
                                __global float* cell_out, __global float* act, const int batch, const int hidden) {
    const int unit = get_global_id(0);
    if (unit >= batch * hidden) return;
    const int b = unit / hidden, j = unit - b * hidden;
    const __global float* x = gates + b * 4 * hidden;
    const float i = opal_sigmoid(x[j]);
    const float f = opal_sigmoid(x[hidden + j]);
    const float g = tanh(x[2 * hidden + j]);
    const float o = opal_sigmoid(x[3 * hidden + j]);
    const float c = f * cell[unit] + i * g;
    const float squashed = tanh(c);
    hidden_out[unit] = o * squashed;
    cell_out[unit] = c;
    __global float* a = act + b * 5 * hidden;
    a[j] = i; a[hidden + j] = f; a[2 * hidden + j] = g; a[3 * hidden + j] = o; a[4 * hidden + j] = squashed;
}

__kernel void lstm_cell_backward(const __global float* dhidden_out, const __global float* dcell_out,
                                 const __global float* cell, const __global float* act,
                                 __global float* dgates, __global float* dcell, const int batch, const int hidden) {
    const int unit = get_global_id(0);
    if (unit >= batch * hidden) return;
    const int b = unit / hidden, j = unit - b * hidden;
    const __global float* a = act + b * 5 * hidden;
    const float i = a[j], f = a[hidden + j], g = a[2 * hidden + j], o = a[3 * hidden + j];
    const float squashed = a[4 * hidden + j];
    const float dh = dhidden_out[unit];
    const float dc = dcell_out[unit] + dh * o * (1.0f - squashed * squashed);
    __global float* dx = dgates + b * 4 * hidden;
    dx[j] = dc * g * i * (1.0f - i);
    dx[hidden + j] = dc * cell[unit] * f * (1.0f - f);
    dx[2 * hidden + j] = dc * i * (1.0f - g * g);
    dx[3 * hidden + j] = dh * squashed * o * (1.0f - o);
    dcell[unit] = dc * f;
}

__kernel void gru_cell_forward(const __global float* xi, const __global float* xh, const __global float* hidden_state,
                               __global float* out, __global float* act, const int batch, const int hidden) {
    const int unit = get_global_id(0);
    if (unit >= batch * hidden) return;
    const int b = unit / hidden, j = unit - b * hidden;
    const int row = b * 3 * hidden;
    const float r = opal_sigmoid(xi[row + j] + xh[row + j]);
    const float z = opal_sigmoid(xi[row + hidden + j] + xh[row + hidden + j]);
    const float n = tanh(xi[row + 2 * hidden + j] + r * xh[row + 2 * hidden + j]);
    out[unit] = (1.0f - z) * n + z * hidden_state[unit];
    act[row + j] = r; act[row + hidden + j] = z; act[row + 2 * hidden + j] = n;
}

__kernel void gru_cell_backward(const __global float* dout, const __global float* xh, const __global float* hidden_state,
                                const __global float* act, __global float* dxi, __global float* dxh,
                                __global float* dhidden, const int batch, const int hidden) {
    const int unit = get_global_id(0);
    if (unit >= batch * hidden) return;
    const int b = unit / hidden, j = unit - b * hidden;
    const int row = b * 3 * hidden;
    const float r = act[row + j], z = act[row + hidden + j], n = act[row + 2 * hidden + j];
    const float dh = dout[unit];
    const float dn = dh * (1.0f - z) * (1.0f - n * n);
    const float dz = dh * (hidden_state[unit] - n) * z * (1.0f - z);
    const float dr = dn * xh[row + 2 * hidden + j] * r * (1.0f - r);
    dxi[row + j] = dr; dxi[row + hidden + j] = dz; dxi[row + 2 * hidden + j] = dn;
    dxh[row + j] = dr; dxh[row + hidden + j] = dz; dxh[row + 2 * hidden + j] = dn * r;
    dhidden[unit] = dh * z;
}
