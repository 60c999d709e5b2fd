// OpenCV's StaticSaliencyFineGrained (Montabone & Soto 2010) for a batch of uint8 images.
//
// Launched from fastmix/backends/cupy/fine_grained_saliency.py. The semantics, and the reasons
// for every cast and rounding below, are in the PyTorch oracle
// fastmix/backends/pytorch/fine_grained_saliency.py, which is bit-exact with OpenCV; these
// kernels reproduce the oracle bit for bit. Float arithmetic uses __f*_rn
// intrinsics so that NVRTC cannot contract it into fused multiply-adds.
//
// Pipeline (one launch each): grey -> blur -> blur -> row prefix sums -> float32 integral
// image -> on/off centre-surround sums at 6 scales (+ per-image maxima) -> per-channel rescale
// to 255 (+ per-image maximum) -> on/off mix and the final uint8 * float32(1/255).
// The 6 neighbourhood sizes are OpenCV's and the oracle's NEIGHBOURHOODS; the tests compare
// the outputs, so a change on one side fails them.

#define FGS_SCALES 6
// Neighbourhood half-sizes of OpenCV: {3*4, 3*4*2, 3*4*2*2, 7*4, 7*4*2, 7*4*2*2}.
__constant__ int kNeighbourhoods[FGS_SCALES] = {12, 24, 48, 28, 56, 112};

// grey[b, p] from uint8 [B, channels, plane]; channels is 3 (RGB, channel 0 = red) or 1.
// OpenCV's fixed-point BGR2GRAY, (B*b_coef + G*g_coef + R*r_coef + 2^(shift-1)) >> shift; the
// launcher passes the oracle's coefficients so the two cannot drift apart.
extern "C" __global__ void fgs_grey(const unsigned char* __restrict__ images, int* __restrict__ grey,
                                    int channels, int plane, int b_coef, int g_coef, int r_coef, int shift) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (p >= plane) {
        return;
    }
    const unsigned char* px = images + (long long)b * channels * plane + p;
    int value;
    if (channels == 1) {
        value = px[0];
    } else {
        const int r = px[0], g = px[plane], bl = px[2 * (long long)plane];
        value = (bl * b_coef + g * g_coef + r * r_coef + (1 << (shift - 1))) >> shift;
    }
    grey[(long long)b * plane + p] = value;
}

// BORDER_REFLECT_101 neighbours; a length-1 axis reflects onto itself.
__device__ __forceinline__ int reflect_left(int i, int n) {
    return i == 0 ? (n > 1 ? 1 : 0) : i - 1;
}

__device__ __forceinline__ int reflect_right(int i, int n) {
    return i == n - 1 ? (n > 1 ? n - 2 : 0) : i + 1;
}

// OpenCV's bit-exact GaussianBlur(3x3, sigma 0) on uint8 values: ([1,2,1] x [1,2,1] sum + 8) >> 4.
extern "C" __global__ void fgs_blur3x3(const int* __restrict__ in, int* __restrict__ out, int rows, int cols) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    if (x >= cols || y >= rows) {
        return;
    }
    const int* img = in + (long long)b * rows * cols;
    const int xl = reflect_left(x, cols), xr = reflect_right(x, cols);
    const int ys[3] = {reflect_left(y, rows), y, reflect_right(y, rows)};
    const int wy[3] = {1, 2, 1};
    int sum = 0;
    for (int k = 0; k < 3; ++k) {
        const int* row = img + (long long)ys[k] * cols;
        sum += wy[k] * (row[xl] + 2 * row[x] + row[xr]);
    }
    out[(long long)b * rows * cols + (long long)y * cols + x] = (sum + 8) >> 4;
}

// rowsum[b, y, x] = grey[b, y, 0] + ... + grey[b, y, x] (exact: 255 * cols <= 2^24 is checked
// by the launcher). One thread per row.
extern "C" __global__ void fgs_row_prefix(const int* __restrict__ grey, int* __restrict__ rowsum,
                                          int batch_rows, int cols) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= batch_rows) {
        return;
    }
    const int* src = grey + (long long)r * cols;
    int* dst = rowsum + (long long)r * cols;
    int running = 0;
    for (int x = 0; x < cols; ++x) {
        running += src[x];
        dst[x] = running;
    }
}

// cv::integral(sdepth=CV_32F): I[b, 0, :] = I[b, :, 0] = 0 and
// I[b, y+1, x+1] = fl32(I[b, y, x+1] + rowsum[b, y, x]), accumulated down each column in order.
// One thread per column x in [0, cols] (column 0 is all zeros).
extern "C" __global__ void fgs_column_integral(const int* __restrict__ rowsum, float* __restrict__ integral,
                                               int rows, int cols) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (x > cols) {
        return;
    }
    const long long stride = cols + 1;
    float* column = integral + (long long)b * (rows + 1) * stride + x;
    float acc = 0.0f;
    column[0] = 0.0f;
    if (x == 0) {
        for (int y = 0; y < rows; ++y) {
            column[(long long)(y + 1) * stride] = 0.0f;
        }
        return;
    }
    const int* sums = rowsum + (long long)b * rows * cols + (x - 1);  // rowsum[b, :, x - 1]
    for (int y = 0; y < rows; ++y) {
        acc = __fadd_rn(acc, (float)sums[(long long)y * cols]);
        column[(long long)(y + 1) * stride] = acc;
    }
}

__device__ __forceinline__ int clamp_int(int v, int lo, int hi) {
    return min(max(v, lo), hi);
}

// getIntensityScaled at the 6 scales, summed: sum_on/sum_off[b, y, x] (<= 6 * 255), and the
// per-image maxima of both sums in maxima[b, 0..1] (pre-set to 0).
extern "C" __global__ void fgs_on_off(const float* __restrict__ integral, const int* __restrict__ grey,
                                      int* __restrict__ sum_on, int* __restrict__ sum_off,
                                      int* __restrict__ maxima, int rows, int cols) {
    __shared__ int block_max[2];
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int b = blockIdx.z;
    const bool valid = x < cols && y < rows;
    const int tid = threadIdx.y * blockDim.x + threadIdx.x;
    if (tid < 2) {
        block_max[tid] = 0;
    }
    __syncthreads();
    if (valid) {
        const long long stride = cols + 1;
        const float* I = integral + (long long)b * (rows + 1) * stride;
        const long long p = (long long)b * rows * cols + (long long)y * cols + x;
        const float g = (float)grey[p];
        int total_on = 0, total_off = 0;
        for (int s = 0; s < FGS_SCALES; ++s) {
            const int n = kNeighbourhoods[s];
            const int x1 = clamp_int(x - n + 1, 0, cols), x2 = clamp_int(x + n + 1, 0, cols);
            const int y1 = clamp_int(y - n + 1, 0, rows), y2 = clamp_int(y + n + 1, 0, rows);
            // ((I22 + I11) - I21) - I12, in this order, as OpenCV.
            float box = __fadd_rn(I[y2 * stride + x2], I[y1 * stride + x1]);
            box = __fsub_rn(box, I[y2 * stride + x1]);
            box = __fsub_rn(box, I[y1 * stride + x2]);
            const float denom = (float)((y2 - y1) * (x2 - x1) - 1);  // 0 for a 1x1 image -> NaN -> 0
            const float mean = __fdiv_rn(__fsub_rn(box, g), denom);
            const float mean_on = __fsub_rn(g, mean);
            const float mean_off = __fsub_rn(mean, g);
            // (uchar)float: truncate toward zero and keep the low byte; NaN > 0 is false.
            total_on += mean_on > 0.0f ? ((int)mean_on & 255) : 0;
            total_off += mean_off > 0.0f ? ((int)mean_off & 255) : 0;
        }
        sum_on[p] = total_on;
        sum_off[p] = total_off;
        atomicMax(&block_max[0], total_on);
        atomicMax(&block_max[1], total_off);
    }
    __syncthreads();
    if (tid < 2) {
        atomicMax(&maxima[2 * b + tid], block_max[tid]);
    }
}

// mixScales' (uchar)(255. * (float)(v / (float)max)), or 0 when max == 0. For
// 0 <= v <= max <= 6 * 255 that equals (255 * v) / max in integers (the oracle's form, checked
// exhaustively by tests/test_fine_grained_saliency.py).
__device__ __forceinline__ int rescale_to_255(int v, int vmax) {
    return vmax > 0 ? (255 * v) / vmax : 0;
}

// In place: sum_on/sum_off become the rescaled on/off maps; mixed_max[b] (pre-set to 0) gets
// max(max on, max off) of image b.
extern "C" __global__ void fgs_rescale(int* __restrict__ on, int* __restrict__ off, const int* __restrict__ maxima,
                                       int* __restrict__ mixed_max, int plane) {
    __shared__ int block_max;
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (threadIdx.x == 0) {
        block_max = 0;
    }
    __syncthreads();
    if (p < plane) {
        const long long i = (long long)b * plane + p;
        const int on_scaled = rescale_to_255(on[i], maxima[2 * b]);
        const int off_scaled = rescale_to_255(off[i], maxima[2 * b + 1]);
        on[i] = on_scaled;
        off[i] = off_scaled;
        atomicMax(&block_max, max(on_scaled, off_scaled));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        atomicMax(&mixed_max[b], block_max);
    }
}

// mixOnOff and convertTo(CV_32F, 1/255): (uchar)(255 * (on + off) / max) * float32(1/255).
extern "C" __global__ void fgs_mix(const int* __restrict__ on, const int* __restrict__ off,
                                   const int* __restrict__ mixed_max, float* __restrict__ out, int plane) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (p >= plane) {
        return;
    }
    const long long i = (long long)b * plane + p;
    const int vmax = mixed_max[b];
    const int mixed = vmax > 0 ? ((255 * (on[i] + off[i])) / vmax) & 255 : 0;
    out[i] = __fmul_rn((float)mixed, (float)(1.0 / 255.0));
}
