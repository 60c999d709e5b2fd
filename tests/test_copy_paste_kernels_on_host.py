"""The CUDA kernels of kernels/*.cu, run on the CPU through a host emulation of the CUDA execution
model, behind the real CuPy launchers, against the PyTorch oracles.

There is no GPU in CPU CI, so this is how the kernels' index arithmetic, reductions, atomics,
barriers and warp shuffles, and the launchers' grids and argument lists, get tested there. The
.cu files are compiled unchanged as C++20 with g++ after a small shim: blocks run one after the
other; the threads of a block run as real threads when the kernel uses ``__syncthreads`` (with
std::barrier for ``__syncthreads`` and per-warp barriers for ``__shfl_down_sync``) and one after
the other otherwise; ``__f*_rn`` are plain IEEE float operations (``-ffp-contract=off``). What
this cannot show (timing, memory coalescing, the DLPack/stream glue) is for tests/test_cupy_gpu.py.
"""
import ctypes
import re
import shutil
import subprocess
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch

from fastmix.backends.cupy import copy_paste as cupy_copy_paste
from fastmix.backends.cupy import fine_grained_saliency as cupy_saliency
from fastmix.backends.pytorch import copy_paste as K
from fastmix.backends.pytorch.fine_grained_saliency import fine_grained_saliency
from fastmix.copy_paste import InstanceBatch, copy_paste
from fastmix.copy_paste import operator as copy_paste_operator

KERNEL_DIR = Path(__file__).resolve().parents[1] / "kernels"

SHIM = r"""
#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

struct dim3 { unsigned x, y, z; };
static dim3 blockDim, gridDim;
static thread_local dim3 threadIdx, blockIdx;
static thread_local int linear_thread;
static std::unique_ptr<std::barrier<>> block_barrier;
static std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
static std::vector<long long> shuffle_slots;
static int threads_per_block;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __constant__
// Blocks run one after the other, so a function-local static is the running block's shared memory.
#define __shared__ static

using std::min;
using std::max;
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline int __shfl_down_sync(unsigned, int value, int offset) {
    const int warp = linear_thread / 32, lane = linear_thread % 32;
    const int width = std::min(32, threads_per_block - 32 * warp);
    shuffle_slots[linear_thread] = value;
    warp_barriers[warp]->arrive_and_wait();
    const int out = lane + offset < width ? (int)shuffle_slots[linear_thread + offset] : value;
    warp_barriers[warp]->arrive_and_wait();
    return out;
}
inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
inline int atomicMax(int* p, int v) {
    std::atomic_ref<int> r(*p);
    int old = r.load();
    while (old < v && !r.compare_exchange_weak(old, v)) {}
    return old;
}
inline int atomicMin(int* p, int v) {
    std::atomic_ref<int> r(*p);
    int old = r.load();
    while (old > v && !r.compare_exchange_weak(old, v)) {}
    return old;
}

template <class Body>
static void emulate(dim3 grid, dim3 block, bool concurrent, Body body) {
    gridDim = grid;
    blockDim = block;
    threads_per_block = (int)(block.x * block.y * block.z);
    for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
        auto run = [&, bx, by, bz](int t) {
            blockIdx = {bx, by, bz};
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            linear_thread = t;
            body();
        };
        if (!concurrent) {
            for (int t = 0; t < threads_per_block; ++t) run(t);
            continue;
        }
        block_barrier = std::make_unique<std::barrier<>>(threads_per_block);
        warp_barriers.clear();
        for (int w = 0; w * 32 < threads_per_block; ++w)
            warp_barriers.push_back(std::make_unique<std::barrier<>>(std::min(32, threads_per_block - 32 * w)));
        shuffle_slots.assign(threads_per_block, 0);
        std::vector<std::thread> threads;
        for (int t = 0; t < threads_per_block; ++t)
            threads.emplace_back([&, t] {
                run(t);
                // A thread that returned no longer takes part in barriers, as on the GPU.
                block_barrier->arrive_and_drop();
                warp_barriers[t / 32]->arrive_and_drop();
            });
        for (auto& th : threads) th.join();
    }
}
"""

SIGNATURE = re.compile(r'extern "C" __global__ void (\w+)\((.*?)\)\s*\{', re.S)


def _parameters(text):
    params = []
    for raw in text.split(","):
        raw = " ".join(raw.split())
        name = re.findall(r"\w+", raw)[-1]
        params.append((raw, name, "*" in raw))
    return params


class HostKernel:
    """Callable like a CuPy RawKernel: kernel(grid, block, args)."""

    def __init__(self, library, name, params, concurrent):
        self.function = getattr(library, f"emulate_{name}")
        self.function.restype = None
        self.function.argtypes = [ctypes.c_uint] * 6 + [ctypes.c_void_p if ptr else ctypes.c_int for _, _, ptr in params]
        self.concurrent, self.params, self.name = concurrent, params, name

    def __call__(self, grid, block, args):
        assert len(args) == len(self.params), f"{self.name}: {len(args)} arguments for {len(self.params)} parameters"
        values = []
        for arg, (_, name, is_pointer) in zip(args, self.params):
            if is_pointer:
                assert isinstance(arg, np.ndarray) and arg.flags.c_contiguous, f"{self.name}.{name} must be an array"
                values.append(arg.ctypes.data)
            else:
                assert isinstance(arg, np.int32), f"{self.name}.{name} must be passed as np.int32, got {type(arg)}"
                values.append(int(arg))
        grid, block = tuple(grid) + (1,) * (3 - len(grid)), tuple(block) + (1,) * (3 - len(block))
        assert all(g >= 1 for g in grid) and 32 <= np.prod(block) <= 1024
        self.function(*grid, *block, *values)


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ (C++20) is needed to run the CUDA kernels on the host")
    return compile_host_kernels(compiler, tmp_path_factory.mktemp("host_kernels"))


def compile_host_kernels(compiler, build):
    """{(module, kernel): HostKernel} for every kernel of kernels/*.cu, built in ``build``."""
    kernels = {}
    for source in sorted(KERNEL_DIR.glob("*.cu")):
        text = source.read_text()
        code = re.sub(r"//[^\n]*", "", text)  # parameter lists carry shape comments
        wrappers, found = [], []
        for name, signature in SIGNATURE.findall(code):
            params = _parameters(signature)
            body_start = code.index(f"void {name}(")
            body_end = code.find('extern "C"', body_start + 1)
            concurrent = "__syncthreads" in code[body_start:body_end if body_end > 0 else None]
            declared = ", ".join(raw for raw, _, _ in params)
            passed = ", ".join(n for _, n, _ in params)
            wrappers.append(
                f'extern "C" void emulate_{name}(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, '
                f'unsigned bz, {declared}) {{ emulate({{gx, gy, gz}}, {{bx, by, bz}}, {str(concurrent).lower()}, '
                f'[&] {{ {name}({passed}); }}); }}')
            found.append((name, params, concurrent))
        cpp = build / f"{source.stem}.cpp"
        cpp.write_text(SHIM + f'#line 1 "{source.name}"\n' + text + "\n" + "\n".join(wrappers) + "\n")
        library = build / f"{source.stem}.so"
        result = subprocess.run([compiler, "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread",
                                 "-Wall", "-Werror", "-Wno-unused-function", "-Wno-unknown-pragmas",
                                 "-o", str(library), str(cpp)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        loaded = ctypes.CDLL(str(library))
        for name, params, concurrent in found:
            kernels[(source.stem, name)] = HostKernel(loaded, name, params, concurrent)
    return kernels


@pytest.fixture
def on_host(host_kernels, monkeypatch):
    """Point the CuPy launchers at the host kernels: CPU tensors stand in for CUDA tensors."""
    def as_array(tensor):
        if tensor.dtype == torch.bool:
            tensor = tensor.view(torch.uint8)
        assert tensor.is_contiguous()
        return tensor.numpy()

    for module in (cupy_copy_paste, cupy_saliency):
        monkeypatch.setattr(module, "get_kernel", lambda mod, fn, device: host_kernels[(mod, fn)])
        monkeypatch.setattr(module, "as_cupy", as_array)
        monkeypatch.setattr(module, "on_torch_stream", lambda device: nullcontext())
        monkeypatch.setattr(module, "require_cuda", lambda *tensors: tensors[0].device)
    return host_kernels


def random_views(gen, batch, sizes, count, out_size):
    source = torch.randint(0, batch, (count,), generator=gen)
    scaled = torch.stack([torch.randint(1, 2 * s + 1, (count,), generator=gen) for s in out_size], dim=1)
    offset = torch.stack([torch.randint(0, 1 << 20, (count,), generator=gen) % ((scaled[:, a] - out_size[a]).clamp_min(0) + 1)
                          for a in range(2)], dim=1)
    flip = torch.rand(count, generator=gen) < 0.5
    return K.pack_views(source, sizes, scaled, offset, flip)


@pytest.mark.parametrize("seed", range(3))
def test_resample_kernels_match_the_oracle(on_host, seed):
    gen = torch.Generator().manual_seed(seed)
    batch, instances, rows, cols = 3, 4, 21, 37
    images = torch.rand(batch, 3, rows, cols, generator=gen) * 255
    masks = torch.rand(batch, instances, rows, cols, generator=gen) > 0.7
    sizes = torch.stack([torch.randint(1, rows + 1, (batch,), generator=gen),
                         torch.randint(1, cols + 1, (batch,), generator=gen)], dim=1)
    out_size = (19, 45)
    views = random_views(gen, batch, sizes, 5, out_size)
    active = torch.rand(5, instances, generator=gen) < 0.7
    got = cupy_copy_paste.lsj_resample_images(images, views, *out_size)
    assert torch.equal(got, K.lsj_resample_images(images, views, *out_size))
    got_uint8 = cupy_copy_paste.lsj_resample_images(images.to(torch.uint8), views, *out_size)
    assert torch.equal(got_uint8, K.lsj_resample_images(images.to(torch.uint8), views, *out_size))
    got_masks = cupy_copy_paste.lsj_resample_masks(masks, views, active, *out_size)
    assert torch.equal(got_masks, K.lsj_resample_masks(masks, views, active, *out_size))


def test_occlusion_blend_and_boxes_match_the_oracle(on_host):
    gen = torch.Generator().manual_seed(0)
    receiving = torch.rand(2, 3, 23, 41, generator=gen) > 0.5
    pasted = torch.rand(2, 5, 23, 41, generator=gen) > 0.9
    pasted[1] = False
    for r, p in ((receiving, pasted), (receiving, pasted[:, :0]), (receiving[:, :0], pasted)):
        assert all(torch.equal(a, b) for a, b in zip(cupy_copy_paste.occlusion_update(r, p), K.occlusion_update(r, p)))
    below, above = torch.rand(2, 3, 23, 41, generator=gen), torch.rand(2, 3, 23, 41, generator=gen)
    alpha = torch.rand(2, 23, 41, generator=gen)
    assert torch.equal(cupy_copy_paste.copy_paste_blend(below, above, alpha), K.copy_paste_blend(below, above, alpha))

    masks = torch.zeros(2, 4, 70, 300, dtype=torch.bool)     # several row bands per instance
    masks[0, 0, 3:60, 7:290] = torch.rand(57, 283, generator=gen) > 0.3
    masks[0, 1, 69, 299] = True                               # one pixel in the last corner
    masks[1, 2, 0, 0] = True                                  # one pixel in the first corner
    masks[1, 3] = torch.rand(70, 300, generator=gen) > 0.999  # scattered pixels
    boxes, areas = cupy_copy_paste.instance_boxes_areas(masks)
    want_boxes, want_areas = K.instance_boxes_areas(masks)
    assert torch.equal(boxes, want_boxes) and torch.equal(areas, want_areas)
    assert boxes[0, 1].tolist() == [299, 69, 300, 70] and boxes[0, 2].tolist() == [0, 0, 0, 0]


def test_whole_copy_paste_through_the_kernels_matches_the_pytorch_path(on_host, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    images, masks, labels = [], [], []
    for i, count in enumerate((4, 0, 3)):  # image 1 has no objects
        images.append(torch.randint(0, 256, (3, 33, 40), generator=gen, dtype=torch.uint8))
        m = torch.zeros(count, 33, 40, dtype=torch.bool)
        for n in range(count):
            y, x = torch.randint(0, 25, (2,), generator=gen).tolist()
            m[n, y:y + 9 + n, x:x + 7 + 2 * n] = True
        masks.append(m)
        labels.append(torch.arange(count) + 10 * i)
    batch = InstanceBatch.from_lists(images, masks, labels=labels)
    monkeypatch.setattr(copy_paste_operator, "_kernels", lambda backend, device: cupy_copy_paste)
    for blend in ("hard", "gaussian"):
        kernels = copy_paste(batch, output_size=(30, 36), mask_occluded_thr=40, blend=blend,
                             generator=torch.Generator().manual_seed(7))
        monkeypatch.setattr(copy_paste_operator, "_kernels", lambda backend, device: K)
        oracle = copy_paste(batch, output_size=(30, 36), mask_occluded_thr=40, blend=blend, params=kernels.params)
        monkeypatch.setattr(copy_paste_operator, "_kernels", lambda backend, device: cupy_copy_paste)
        assert torch.equal(kernels.images, oracle.images)
        for name in ("masks", "boxes", "labels"):
            assert all(torch.equal(a, b) for a, b in zip(getattr(kernels, name), getattr(oracle, name)))


@pytest.mark.parametrize("shape", [(2, 3, 37, 53), (1, 1, 130, 250), (2, 1, 1, 1), (1, 3, 2, 300)])
def test_fine_grained_saliency_kernels_match_the_oracle(on_host, shape):
    gen = torch.Generator().manual_seed(sum(shape))
    images = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
    assert torch.equal(cupy_saliency.fine_grained_saliency(images), fine_grained_saliency(images))


def test_fine_grained_saliency_kernels_on_a_photo_equal_opencv(on_host):
    cv2 = pytest.importorskip("cv2", reason="opencv-contrib-python-headless provides the reference saliency")
    from skimage import data

    rgb = data.coffee()[::4, ::4].copy()
    photo = torch.from_numpy(rgb).permute(2, 0, 1)[None].contiguous()
    got = cupy_saliency.fine_grained_saliency(photo)
    assert torch.equal(got, fine_grained_saliency(photo))
    _, opencv = cv2.saliency.StaticSaliencyFineGrained_create().computeSaliency(rgb[:, :, ::-1].copy())
    assert np.array_equal(got[0].numpy(), opencv)


def test_fine_grained_saliency_kernels_on_a_constant_image(on_host):
    constant = torch.full((1, 1, 20, 20), 7, dtype=torch.uint8)
    assert not cupy_saliency.fine_grained_saliency(constant).any()
