// Simple Copy-Paste kernels of fastmix (Ghiasi et al., CVPR 2021).
//
// Launched from fastmix/backends/cupy/copy_paste.py through cupy.RawModule (NVRTC). The
// semantics are defined by the PyTorch oracle, fastmix/backends/pytorch/copy_paste.py; read its
// module docstring for the jitter geometry and the box convention.
//
// Coordinate and blend arithmetic uses the __f*_rn intrinsics on purpose: they are never
// contracted into fused multiply-adds, so each operation rounds once, exactly as the oracle's
// float32 tensor operations do, and the resampling taps (hence the masks) are bit-identical.
//
// Masks are bytes (0 or 1; torch bool tensors viewed as uint8). Tensors are contiguous.

// Columns of the packed per-view geometry (int32 [V, VIEW_FIELDS]); the oracle's pack_views
// writes the same layout.
enum ViewField {
    VIEW_SOURCE = 0,
    VIEW_IN_H,
    VIEW_IN_W,
    VIEW_SCALED_H,
    VIEW_SCALED_W,
    VIEW_OFFSET_Y,
    VIEW_OFFSET_X,
    VIEW_FLIP,
    VIEW_FIELDS
};

#define FASTMIX_INT_MAX 0x7fffffff
// instance_box_stats keeps (min_row, max_row, min_col, max_col, area) per instance.
#define BOX_STATS 5

struct BilinearTap {
    int i0;
    int i1;
    float weight;  // of i1
    bool inside;   // the position lies inside the resized image (else zero padding)
};

// Position p = out_pos + offset in the resized image; source s = max((p + 0.5) * in/scaled - 0.5, 0).
__device__ __forceinline__ BilinearTap bilinear_tap(int out_pos, int offset, int scaled, int in_len) {
    BilinearTap tap;
    const int pos = out_pos + offset;
    tap.inside = pos < scaled;
    const float ratio = __fdiv_rn((float)in_len, (float)scaled);
    const float src = fmaxf(__fsub_rn(__fmul_rn(__fadd_rn((float)pos, 0.5f), ratio), 0.5f), 0.0f);
    tap.i0 = min((int)floorf(src), in_len - 1);
    tap.i1 = min(tap.i0 + 1, in_len - 1);
    tap.weight = __fsub_rn(src, (float)tap.i0);
    return tap;
}

// Pixel-centre nearest neighbour: min(floor((p + 0.5) * in/scaled), in - 1).
__device__ __forceinline__ int nearest_tap(int out_pos, int offset, int scaled, int in_len, bool* inside) {
    const int pos = out_pos + offset;
    *inside = pos < scaled;
    const float ratio = __fdiv_rn((float)in_len, (float)scaled);
    return min((int)floorf(__fmul_rn(__fadd_rn((float)pos, 0.5f), ratio)), in_len - 1);
}

// Column j of the horizontally flipped original is column (w - 1 - j) of the original.
__device__ __forceinline__ int flip_column(int column, int in_w, int flip) {
    return flip ? in_w - 1 - column : column;
}

// Bilinear LSJ: out[v, c, y, x] (float32) for every view v; grid (x tiles, y tiles, views).
extern "C" __global__ void lsj_resample_images(const float* __restrict__ images,  // [B, C, in_rows, in_cols]
                                               const int* __restrict__ views,     // [V, VIEW_FIELDS]
                                               float* __restrict__ out,           // [V, C, out_h, out_w]
                                               int channels, int in_rows, int in_cols, int out_h, int out_w) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int v = blockIdx.z;
    if (x >= out_w || y >= out_h) {
        return;
    }
    const int* view = views + v * VIEW_FIELDS;
    const BilinearTap ty = bilinear_tap(y, view[VIEW_OFFSET_Y], view[VIEW_SCALED_H], view[VIEW_IN_H]);
    const BilinearTap tx = bilinear_tap(x, view[VIEW_OFFSET_X], view[VIEW_SCALED_W], view[VIEW_IN_W]);
    const long long out_plane = (long long)out_h * out_w;
    float* dst = out + (long long)v * channels * out_plane + (long long)y * out_w + x;
    if (!(ty.inside && tx.inside)) {
        for (int c = 0; c < channels; ++c) {
            dst[c * out_plane] = 0.0f;
        }
        return;
    }
    const int c0 = flip_column(tx.i0, view[VIEW_IN_W], view[VIEW_FLIP]);
    const int c1 = flip_column(tx.i1, view[VIEW_IN_W], view[VIEW_FLIP]);
    const long long in_plane = (long long)in_rows * in_cols;
    const float* src = images + (long long)view[VIEW_SOURCE] * channels * in_plane;
    const long long row0 = (long long)ty.i0 * in_cols;
    const long long row1 = (long long)ty.i1 * in_cols;
    const float wx1 = tx.weight, wx0 = __fsub_rn(1.0f, tx.weight);
    const float wy1 = ty.weight, wy0 = __fsub_rn(1.0f, ty.weight);
    for (int c = 0; c < channels; ++c) {
        const float* p = src + c * in_plane;
        const float top = __fadd_rn(__fmul_rn(wx0, p[row0 + c0]), __fmul_rn(wx1, p[row0 + c1]));
        const float bottom = __fadd_rn(__fmul_rn(wx0, p[row1 + c0]), __fmul_rn(wx1, p[row1 + c1]));
        dst[c * out_plane] = __fadd_rn(__fmul_rn(wy0, top), __fmul_rn(wy1, bottom));
    }
}

// Nearest LSJ of instance masks: out[v, n] is empty where active[v, n] == 0.
extern "C" __global__ void lsj_resample_masks(const unsigned char* __restrict__ masks,   // [B, N, in_rows, in_cols]
                                              const int* __restrict__ views,            // [V, VIEW_FIELDS]
                                              const unsigned char* __restrict__ active,  // [V, N]
                                              unsigned char* __restrict__ out,          // [V, N, out_h, out_w]
                                              int instances, int in_rows, int in_cols, int out_h, int out_w) {
    const int x = blockIdx.x * blockDim.x + threadIdx.x;
    const int y = blockIdx.y * blockDim.y + threadIdx.y;
    const int v = blockIdx.z;
    if (x >= out_w || y >= out_h) {
        return;
    }
    const int* view = views + v * VIEW_FIELDS;
    bool inside_y, inside_x;
    const int row = nearest_tap(y, view[VIEW_OFFSET_Y], view[VIEW_SCALED_H], view[VIEW_IN_H], &inside_y);
    const int col = flip_column(nearest_tap(x, view[VIEW_OFFSET_X], view[VIEW_SCALED_W], view[VIEW_IN_W], &inside_x),
                                view[VIEW_IN_W], view[VIEW_FLIP]);
    const bool inside = inside_y && inside_x;
    const long long out_plane = (long long)out_h * out_w;
    const long long in_plane = (long long)in_rows * in_cols;
    const unsigned char* src = masks + (long long)view[VIEW_SOURCE] * instances * in_plane + (long long)row * in_cols + col;
    unsigned char* dst = out + (long long)v * instances * out_plane + (long long)y * out_w + x;
    for (int n = 0; n < instances; ++n) {
        const bool on = inside && active[v * instances + n] != 0 && src[n * in_plane] != 0;
        dst[n * out_plane] = on ? 1 : 0;
    }
}

// alpha[b] = union of pasted[b, :]; updated[b, n] = receiving[b, n] AND NOT alpha[b].
// grid (pixel tiles, images).
extern "C" __global__ void occlusion_update(const unsigned char* __restrict__ receiving,  // [B, N, plane]
                                            const unsigned char* __restrict__ pasted,     // [B, M, plane]
                                            unsigned char* __restrict__ alpha,            // [B, plane]
                                            unsigned char* __restrict__ updated,          // [B, N, plane]
                                            int receiving_count, int pasted_count, int plane) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (p >= plane) {
        return;
    }
    const unsigned char* pasted_px = pasted + (long long)b * pasted_count * plane + p;
    bool covered = false;
    for (int m = 0; m < pasted_count && !covered; ++m) {
        covered = pasted_px[(long long)m * plane] != 0;
    }
    alpha[(long long)b * plane + p] = covered ? 1 : 0;
    const long long base = (long long)b * receiving_count * plane + p;
    for (int n = 0; n < receiving_count; ++n) {
        const long long i = base + (long long)n * plane;
        updated[i] = (receiving[i] != 0 && !covered) ? 1 : 0;
    }
}

// out = receiving * (1 - alpha) + pasted * alpha, alpha [B, plane] broadcast over channels.
extern "C" __global__ void copy_paste_blend(const float* __restrict__ receiving,  // [B, C, plane]
                                            const float* __restrict__ pasted,     // [B, C, plane]
                                            const float* __restrict__ alpha,      // [B, plane]
                                            float* __restrict__ out,              // [B, C, plane]
                                            int channels, int plane) {
    const int p = blockIdx.x * blockDim.x + threadIdx.x;
    const int b = blockIdx.y;
    if (p >= plane) {
        return;
    }
    const float a = alpha[(long long)b * plane + p];
    const float keep = __fsub_rn(1.0f, a);
    for (int c = 0; c < channels; ++c) {
        const long long i = ((long long)b * channels + c) * plane + p;
        out[i] = __fadd_rn(__fmul_rn(receiving[i], keep), __fmul_rn(pasted[i], a));
    }
}

__device__ __forceinline__ void warp_reduce_stats(int* s) {
    for (int offset = 16; offset > 0; offset >>= 1) {
        s[0] = min(s[0], __shfl_down_sync(0xffffffffu, s[0], offset));
        s[1] = max(s[1], __shfl_down_sync(0xffffffffu, s[1], offset));
        s[2] = min(s[2], __shfl_down_sync(0xffffffffu, s[2], offset));
        s[3] = max(s[3], __shfl_down_sync(0xffffffffu, s[3], offset));
        s[4] += __shfl_down_sync(0xffffffffu, s[4], offset);
    }
}

// One pass over the masks: per instance k (blockIdx.x) and band of rows (blockIdx.y), reduce the
// first/last row and column and the pixel count in the block, then merge into stats[k] with one
// set of atomics per block. stats starts at (INT_MAX, -1, INT_MAX, -1, 0). blockDim.x must be a
// multiple of 32 and at most 1024.
extern "C" __global__ void instance_box_stats(const unsigned char* __restrict__ masks,  // [K, rows, cols]
                                              int* __restrict__ stats,                  // [K, BOX_STATS]
                                              int rows, int cols, int rows_per_block) {
    __shared__ int warp_stats[32][BOX_STATS];
    const int k = blockIdx.x;
    const int row_begin = blockIdx.y * rows_per_block;
    const int row_end = min(row_begin + rows_per_block, rows);
    const int band = max(row_end - row_begin, 0) * cols;
    const unsigned char* m = masks + (long long)k * rows * cols + (long long)row_begin * cols;
    int s[BOX_STATS] = {FASTMIX_INT_MAX, -1, FASTMIX_INT_MAX, -1, 0};
    for (int i = threadIdx.x; i < band; i += blockDim.x) {
        if (m[i] != 0) {
            const int r = row_begin + i / cols;
            const int c = i % cols;
            s[0] = min(s[0], r);
            s[1] = max(s[1], r);
            s[2] = min(s[2], c);
            s[3] = max(s[3], c);
            s[4] += 1;
        }
    }
    warp_reduce_stats(s);
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    if (lane == 0) {
        for (int j = 0; j < BOX_STATS; ++j) {
            warp_stats[warp][j] = s[j];
        }
    }
    __syncthreads();
    if (warp != 0) {
        return;
    }
    const int warps = blockDim.x >> 5;
    s[0] = lane < warps ? warp_stats[lane][0] : FASTMIX_INT_MAX;
    s[1] = lane < warps ? warp_stats[lane][1] : -1;
    s[2] = lane < warps ? warp_stats[lane][2] : FASTMIX_INT_MAX;
    s[3] = lane < warps ? warp_stats[lane][3] : -1;
    s[4] = lane < warps ? warp_stats[lane][4] : 0;
    warp_reduce_stats(s);
    if (lane == 0 && s[4] > 0) {
        int* out = stats + (long long)k * BOX_STATS;
        atomicMin(out + 0, s[0]);
        atomicMax(out + 1, s[1]);
        atomicMin(out + 2, s[2]);
        atomicMax(out + 3, s[3]);
        atomicAdd(out + 4, s[4]);
    }
}

// boxes[k] = (min_col, min_row, max_col + 1, max_row + 1) as float32, or zeros when empty.
extern "C" __global__ void finalize_boxes(const int* __restrict__ stats,  // [K, BOX_STATS]
                                          float* __restrict__ boxes,      // [K, 4]
                                          long long* __restrict__ areas,  // [K]
                                          int count) {
    const int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= count) {
        return;
    }
    const int* s = stats + (long long)k * BOX_STATS;
    const bool present = s[4] > 0;
    boxes[4 * k + 0] = present ? (float)s[2] : 0.0f;
    boxes[4 * k + 1] = present ? (float)s[0] : 0.0f;
    boxes[4 * k + 2] = present ? (float)(s[3] + 1) : 0.0f;
    boxes[4 * k + 3] = present ? (float)(s[1] + 1) : 0.0f;
    areas[k] = s[4];
}
