//! The unsafe half of the native forward, kept in one file so it can be
//! audited in one sitting: the instruction-set probe, the register tiles that
//! read through raw pointers (the matrix products), the target-feature
//! dispatch the element-wise steps run through, and the one allocator call
//! the scorer's speed depends on. Every `unsafe` of the model is here, each
//! with the reason it holds; callers see only safe functions that check
//! their extents once.

use std::ops::Range;

/// The instruction set the native forward runs on. [`Simd::detect`] picks
/// the best the CPU has; a weaker one can be asked for (tests compare all
/// of them with libtorch), a stronger one falls back to what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Scalar,
    Avx2,
    Avx512,
}

impl Simd {
    /// The best level this CPU has (detected once).
    pub fn detect() -> Simd {
        static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx2") && has!("fma") {
                    return Simd::Avx512;
                }
                if has!("avx2") && has!("fma") {
                    return Simd::Avx2;
                }
            }
            Simd::Scalar
        })
    }

    /// This level, or the best the CPU has if that is lower.
    pub(super) fn usable(self) -> Simd {
        self.min(Simd::detect())
    }
}

/// Rows are processed 4 at a time (2 for AVX2 layer products), so every
/// row count is padded to a multiple of 4; padding rows start at zero and
/// their results are never read.
pub(super) const MR: usize = 4;
/// Layer outputs are computed in tiles 32 columns wide: with 4 rows
/// (AVX-512) or 2 rows (AVX2) that is 8 accumulator registers, the best of
/// the shapes measured here (about 110 GFLOP/s on one Zen 4 core; the
/// compiler's own vectorisation of the same loops reached 70).
pub(super) const NR: usize = 32;
/// The attention scores' tile is narrower, so less is computed above the
/// causal diagonal.
const NA: usize = 16;

pub(super) fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// A Linear layer transposed for the kernel: `w[k * np + j]` is torch's
/// `weight[j][k]`, with the output width padded to a multiple of [`NR`] by
/// zero columns.
pub(super) struct Mat {
    pub k: usize,
    pub np: usize,
    pub w: Vec<f32>,
    pub b: Vec<f32>,
}

/// A matrix operand read by broadcasting single elements: element (i, k)
/// is at `i * si + k * sk`, so a row-major or a transposed buffer serves
/// without copying.
#[derive(Clone, Copy)]
pub(super) struct Strided<'a> {
    pub d: &'a [f32],
    pub si: usize,
    pub sk: usize,
}

pub(super) fn rows_of(d: &[f32], ld: usize) -> Strided<'_> {
    Strided { d, si: ld, sk: 1 }
}

// The matrix products. Each checks its extents once, then runs register
// tiles that read through raw pointers.

/// Whether `x` holds element (rows.end - 1, k - 1).
fn covers(x: Strided, rows_end: usize, k: usize) -> bool {
    rows_end == 0 || k == 0 || x.d.len() > (rows_end - 1) * x.si + (k - 1) * x.sk
}

/// The operands of one product out (+)= x W + bias, as raw pointers the
/// tiles are cut from: x element (i, kk) at `x + i * si + kk * sk`, W row kk
/// at `w + kk * ldw`, output row i at `out + i * ldo`; `bias` may be null.
struct Product {
    x: *const f32,
    si: usize,
    sk: usize,
    w: *const f32,
    ldw: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
}

impl Product {
    fn new(
        x: Strided,
        w: &[f32],
        ldw: usize,
        bias: Option<&[f32]>,
        out: &mut [f32],
        ldo: usize,
    ) -> Product {
        Product {
            x: x.d.as_ptr(),
            si: x.si,
            sk: x.sk,
            w: w.as_ptr(),
            ldw,
            bias: bias.map_or(std::ptr::null(), <[f32]>::as_ptr),
            out: out.as_mut_ptr(),
            ldo,
        }
    }

    /// The tile at rows `r..r + MR` of x and out, columns `j0..` of W, bias
    /// and out, over `k` of x's columns.
    ///
    /// # Safety
    /// The tile lies inside the slices the product was made from.
    unsafe fn tile<const ACC: bool>(
        &self,
        simd: Simd,
        width: usize,
        r: usize,
        j0: usize,
        k: usize,
    ) {
        let t = Tile {
            x: self.x.add(r * self.si),
            si: self.si,
            sk: self.sk,
            k,
            w: self.w.add(j0),
            ldw: self.ldw,
            bias: if self.bias.is_null() {
                self.bias
            } else {
                self.bias.add(j0)
            },
            out: self.out.add(r * self.ldo + j0),
            ldo: self.ldo,
        };
        tile::<ACC>(simd, width, t);
    }
}

/// out[r, ..np] = x[r, ..k] W + b (or `+=` when ACC: the residual adds), for
/// r in `rows` (a multiple of [`MR`]).
pub(super) fn linear<const ACC: bool>(
    simd: Simd,
    x: Strided,
    rows: Range<usize>,
    m: &Mat,
    out: &mut [f32],
    ldo: usize,
) {
    let (k, np) = (m.k, m.np);
    if rows.is_empty() {
        return;
    }
    assert!(rows.len().is_multiple_of(MR) && np.is_multiple_of(NR) && ldo >= np);
    assert!(covers(x, rows.end, k) && out.len() >= (rows.end - 1) * ldo + np);
    assert!(m.w.len() >= k * np && m.b.len() >= np);
    let p = Product::new(x, &m.w, np, Some(&m.b), out, ldo);
    for j0 in (0..np).step_by(NR) {
        for r in rows.clone().step_by(MR) {
            // SAFETY: rows r..r+MR and columns j0..j0+NR lie inside the
            // extents asserted above.
            unsafe { p.tile::<ACC>(simd, NR, r, j0, k) };
        }
    }
}

/// st[j, i] = k_j . q_i for keys j < n and queries i from c0, in the tiles
/// that hold some j <= i; `qt` holds the queries transposed (hs, tq).
#[allow(clippy::too_many_arguments)]
pub(super) fn scores(
    simd: Simd,
    keys: Strided,
    n: usize,
    hs: usize,
    qt: &[f32],
    tq: usize,
    c0: usize,
    st: &mut [f32],
) {
    let tp = round_up(n, MR);
    assert!(tq.is_multiple_of(NA) && c0.is_multiple_of(NA) && tp <= tq);
    assert!(covers(keys, tp, hs) && qt.len() >= hs * tq && st.len() >= tp * tq);
    let p = Product::new(keys, qt, tq, None, st, tq);
    for i0 in (c0..tq).step_by(NA) {
        for j in (0..tp).step_by(MR).take_while(|&j| j < i0 + NA) {
            // SAFETY: inside the asserted extents.
            unsafe { p.tile::<false>(simd, NA, j, i0, hs) };
        }
    }
}

/// yt[d, i] = sum over keys j of v[j, d] st[j, i] (unnormalised weights),
/// for queries i from c0, each 16-query tile reading only the keys it can
/// see; `values` is the head's values viewed as (hs, keys).
#[allow(clippy::too_many_arguments)]
pub(super) fn att_v(
    simd: Simd,
    values: Strided,
    hs: usize,
    st: &[f32],
    tq: usize,
    c0: usize,
    n: usize,
    yt: &mut [f32],
) {
    assert!(tq.is_multiple_of(NA) && c0.is_multiple_of(NA) && n <= tq);
    assert!(covers(values, hs, n) && st.len() >= n * tq && yt.len() >= hs * tq);
    if !hs.is_multiple_of(MR) {
        for d in 0..hs {
            for i in c0..tq {
                let k = (i - i % NA + NA).min(n);
                yt[d * tq + i] = (0..k)
                    .map(|j| values.d[d * values.si + j * values.sk] * st[j * tq + i])
                    .sum();
            }
        }
        return;
    }
    let p = Product::new(values, st, tq, None, yt, tq);
    for i0 in (c0..tq).step_by(NA) {
        let k = (i0 + NA).min(n);
        for d in (0..hs).step_by(MR) {
            // SAFETY: inside the asserted extents.
            unsafe { p.tile::<false>(simd, NA, d, i0, k) };
        }
    }
}

/// One register tile's operands: x(i, kk) at `x + i * si + kk * sk` for
/// i < the tile's rows, kk < k; w: k rows of the tile's width at stride
/// ldw; bias: that many values, or null; out: the tile's rows of its width
/// at stride ldo.
#[derive(Clone, Copy)]
struct Tile {
    x: *const f32,
    si: usize,
    sk: usize,
    k: usize,
    w: *const f32,
    ldw: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
}

/// One register tile: out[MR, width] (+ when ACC)= x[MR, ..k] w[..k, width]
/// + bias, on the best kernel `simd` allows; `width` is [`NR`] or [`NA`].
///
/// # Safety
/// `t` as [`Tile`] says, for MR rows; `simd` is a level the CPU has.
unsafe fn tile<const ACC: bool>(simd: Simd, width: usize, t: Tile) {
    match (simd, width) {
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, NR) => x86::tile512::<MR, 2, ACC>(t),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, _) => x86::tile512::<MR, 1, ACC>(t),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, NR) => {
            x86::tile256::<2, 4, ACC>(t);
            x86::tile256::<2, 4, ACC>(Tile {
                x: t.x.add(2 * t.si),
                out: t.out.add(2 * t.ldo),
                ..t
            });
        }
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, _) => x86::tile256::<MR, 2, ACC>(t),
        (_, NR) => tile_portable::<MR, NR, ACC>(t),
        _ => tile_portable::<MR, NA, ACC>(t),
    }
}

/// The portable register tile, M rows by W columns; contract as [`tile`].
#[inline(always)]
unsafe fn tile_portable<const M: usize, const W: usize, const ACC: bool>(t: Tile) {
    let mut acc = [[0.0f32; W]; M];
    for (i, a) in acc.iter_mut().enumerate() {
        for (j, v) in a.iter_mut().enumerate() {
            *v = if t.bias.is_null() {
                0.0
            } else {
                *t.bias.add(j)
            } + if ACC { *t.out.add(i * t.ldo + j) } else { 0.0 };
        }
    }
    for kk in 0..t.k {
        for (i, a) in acc.iter_mut().enumerate() {
            let xi = *t.x.add(i * t.si + kk * t.sk);
            for (j, v) in a.iter_mut().enumerate() {
                *v += xi * *t.w.add(kk * t.ldw + j);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (j, v) in a.iter().enumerate() {
            *t.out.add(i * t.ldo + j) = *v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Tile;
    use std::arch::x86_64::*;

    /// One register tile for one vector width: M rows by NV vectors of
    /// `$lanes` columns; contract as [`super::tile`]. The AVX-512 and AVX2
    /// tiles are the same loop over different intrinsics.
    macro_rules! register_tile {
        ($(#[$doc:meta])* $name:ident, $feature:tt, $lanes:literal,
         $zero:ident, $load:ident, $add:ident, $set1:ident, $fmadd:ident, $store:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $feature)]
            pub unsafe fn $name<const M: usize, const NV: usize, const ACC: bool>(t: Tile) {
                let (x, si, sk, w, ldw, out, ldo) = (t.x, t.si, t.sk, t.w, t.ldw, t.out, t.ldo);
                let mut c = [[$zero(); NV]; M];
                for (i, ci) in c.iter_mut().enumerate() {
                    for (v, cv) in ci.iter_mut().enumerate() {
                        if !t.bias.is_null() {
                            *cv = $load(t.bias.add($lanes * v));
                        }
                        if ACC {
                            *cv = $add(*cv, $load(out.add(i * ldo + $lanes * v)));
                        }
                    }
                }
                for kk in 0..t.k {
                    let mut wv = [$zero(); NV];
                    for (v, wv) in wv.iter_mut().enumerate() {
                        *wv = $load(w.add(kk * ldw + $lanes * v));
                    }
                    for (i, ci) in c.iter_mut().enumerate() {
                        let a = $set1(*x.add(i * si + kk * sk));
                        for (cv, wv) in ci.iter_mut().zip(&wv) {
                            *cv = $fmadd(a, *wv, *cv);
                        }
                    }
                }
                for (i, ci) in c.iter().enumerate() {
                    for (v, cv) in ci.iter().enumerate() {
                        $store(out.add(i * ldo + $lanes * v), *cv);
                    }
                }
            }
        };
    }

    register_tile!(
        /// The AVX-512 register tile: vectors of 16 columns.
        tile512, "avx512f", 16,
        _mm512_setzero_ps, _mm512_loadu_ps, _mm512_add_ps, _mm512_set1_ps, _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    register_tile!(
        /// The AVX2 register tile: vectors of 8 columns.
        tile256, "avx2,fma", 8,
        _mm256_setzero_ps, _mm256_loadu_ps, _mm256_add_ps, _mm256_set1_ps, _mm256_fmadd_ps,
        _mm256_storeu_ps
    );
}

// The element-wise steps (elementwise.rs) are plain loops that the compiler
// vectorises when compiled for AVX2+FMA; this is the switch into that code.

/// Defines `fn $name(simd: Simd, args...)`: `$body` (generic over
/// [`Arith`]) compiled for AVX2+FMA when `simd` allows, else portably.
macro_rules! dispatch {
    ($(#[$attr:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$attr])*
        $vis fn $name(simd: $crate::model::score::kernels::Simd, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic<A: $crate::model::score::kernels::Arith>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn fast($($arg: $ty),*) $(-> $ret)? {
                generic::<$crate::model::score::kernels::Fused>($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if simd >= $crate::model::score::kernels::Simd::Avx2 {
                // SAFETY: `simd` is only ever a level the CPU has (Simd::usable).
                return unsafe { fast($($arg),*) };
            }
            generic::<$crate::model::score::kernels::Plain>($($arg),*)
        }
    };
}
pub(super) use dispatch;

/// Multiply-add: fused where the element-wise code is compiled for FMA, a
/// multiply then an add elsewhere (`mul_add` would be a slow library call).
pub(super) trait Arith {
    fn fma(a: f32, b: f32, c: f32) -> f32;
}
pub(super) struct Fused;
pub(super) struct Plain;
impl Arith for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
impl Arith for Plain {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

// ---------------------------------------------------------------- allocator

/// Tells glibc's allocator to keep freed memory instead of returning it to
/// the kernel on every call: each batch otherwise re-faults its pages in,
/// which costs libtorch 1.4-1.8x here. Same effect as starting the process
/// with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`. Process-wide,
/// hence a call the binary makes, not the library. Returns false where it
/// does not apply (not glibc) or was refused.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        // SAFETY: mallopt only changes allocator tunables; these two are
        // valid for any value and do not invalidate existing allocations.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
