//! One CUDA device: its context, the stream every operation runs on, the
//! cuBLAS handle, the compiled kernels, and device memory.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::Ptx;

use crate::{compile, CudaError};

/// Whether the driver, NVRTC and cuBLAS libraries can be opened, and if
/// not, which is missing (cudarc would panic on first use instead).
pub fn libraries_present() -> Result<(), CudaError> {
    // SAFETY: only tries to dlopen each library by its usual names.
    let present = unsafe {
        [
            (
                "the CUDA driver (libcuda)",
                cudarc::driver::sys::is_culib_present(),
            ),
            ("NVRTC (libnvrtc)", cudarc::nvrtc::sys::is_culib_present()),
            (
                "cuBLAS (libcublas)",
                cudarc::cublas::sys::is_culib_present(),
            ),
        ]
    };
    match present.iter().find(|(_, ok)| !ok) {
        Some((name, _)) => Err(CudaError::Unavailable(format!("{name} not found"))),
        None => Ok(()),
    }
}

/// Device memory with its raw address (kernel arguments take the address;
/// the slice frees the memory when dropped).
pub struct DeviceBuffer {
    pub(crate) ptr: u64,
    pub(crate) bytes: usize,
    _mem: Option<CudaSlice<u8>>,
}

impl DeviceBuffer {
    /// No memory: what a failed allocation leaves (the backend has
    /// recorded the failure and runs nothing more).
    pub(crate) fn null() -> Self {
        DeviceBuffer {
            ptr: 0,
            bytes: 0,
            _mem: None,
        }
    }
}

/// What [`Gpu::launch`] does with a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Queue it on the stream (also while the stream is being captured).
    Run = 0,
    /// Only fold the kernel, grid and argument bytes into the fingerprint.
    Fingerprint = 1,
}

pub(crate) struct Gpu {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub name: String,
    pub arch: String,
    functions: HashMap<String, CudaFunction>,
    mode: AtomicU8,
    fingerprint: AtomicU64,
    /// Cleared when work that cannot be captured (cuBLAS) is fingerprinted.
    capturable: AtomicBool,
    /// Kernels are launched as programmatic dependents of the one before
    /// (sm_90 on; `follow_predecessor` in common.cuh); for now only with
    /// QUARREL_CUDA_PDL=1, until it has been checked and timed on a GPU.
    pdl: bool,
}

/// Element types copied to and from the device as raw bytes: no padding,
/// and every bit pattern a valid value.
pub trait Plain: Copy {}
impl Plain for u8 {}
impl Plain for u32 {}
impl Plain for f32 {}

fn as_bytes<T: Plain>(v: &[T]) -> &[u8] {
    // SAFETY: `Plain` types have no padding; u8 has no alignment needs.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// One kernel argument: the address of a value and its size in bytes.
pub(crate) type KernelArg = (*mut c_void, usize);

impl Gpu {
    pub fn open(ordinal: usize) -> Result<Gpu, CudaError> {
        libraries_present()?;
        let count = CudaContext::device_count()?;
        if ordinal as i32 >= count {
            return Err(CudaError::Unavailable(format!(
                "device {ordinal} requested, {count} present"
            )));
        }
        let ctx = CudaContext::new(ordinal)?;
        // One stream orders everything: cudarc's per-buffer event
        // tracking would only add driver calls to every launch.
        // SAFETY: no other stream is ever used with this context.
        unsafe { ctx.disable_event_tracking() };
        // Not the legacy default stream, which cannot be captured.
        let stream = ctx.new_stream()?;
        let blas = CudaBlas::new(stream.clone())?;
        let (major, minor) = ctx.compute_capability()?;
        let pdl = major >= 9 && std::env::var("QUARREL_CUDA_PDL").is_ok_and(|v| v == "1");
        let arch = format!("sm_{major}{minor}");
        let cubin = compile::cubin(&arch)?;
        let module = ctx.load_module(Ptx::from_binary(cubin))?;
        let mut functions = HashMap::new();
        for name in kernel_names() {
            let f = module.load_function(&name)?;
            functions.insert(name, f);
        }
        let mut gpu = Gpu {
            name: ctx.name()?,
            ctx,
            stream,
            blas,
            arch,
            functions,
            mode: AtomicU8::new(Mode::Run as u8),
            fingerprint: AtomicU64::new(0),
            capturable: AtomicBool::new(true),
            pdl,
        };
        if gpu.pdl && gpu.probe_launch().is_err() {
            eprintln!("quarrel: programmatic dependent launch refused; launching kernels plainly");
            gpu.pdl = false;
        }
        Ok(gpu)
    }

    /// Launches one kernel over nothing and waits for it: whether launches
    /// as this device is set up to make them work at all.
    fn probe_launch(&self) -> Result<(), CudaError> {
        let (x, s, n) = (0u64, 1.0f32, 0u64);
        self.launch(
            "scale_f32",
            (1, 1, 1),
            32,
            &mut crate::kernel_args![x, s, n],
        )?;
        self.stream.synchronize()?;
        Ok(())
    }

    pub fn function(&self, name: &str) -> &CudaFunction {
        self.functions
            .get(name)
            .unwrap_or_else(|| panic!("kernel {name} is not in the module"))
    }

    pub fn alloc(&self, bytes: usize) -> Result<DeviceBuffer, CudaError> {
        // Zeroed: a buffer is never read before it is written, but a bug
        // then shows as zeros rather than as another tensor's data.
        let mem = self.stream.alloc_zeros::<u8>(bytes.max(1))?;
        let ptr = mem.device_ptr(&self.stream).0;
        Ok(DeviceBuffer {
            ptr,
            bytes,
            _mem: Some(mem),
        })
    }

    pub fn upload(&self, data: &[u8]) -> Result<DeviceBuffer, CudaError> {
        let mut buf = self.alloc(data.len())?;
        self.copy_to_device(data, &mut buf, 0)?;
        Ok(buf)
    }

    /// Copies `data` into `dst` at byte `offset` (ordered on the stream).
    pub fn copy_to_device<T: Plain>(
        &self,
        data: &[T],
        dst: &mut DeviceBuffer,
        offset: usize,
    ) -> Result<(), CudaError> {
        let data = as_bytes(data);
        assert!(
            offset + data.len() <= dst.bytes,
            "device copy out of bounds"
        );
        if data.is_empty() {
            return Ok(());
        }
        // SAFETY: the destination range lies inside `dst` (asserted); the
        // source is a live host slice, and the copy completes before this
        // returns for pageable memory.
        unsafe {
            cudarc::driver::result::memcpy_htod_async(
                dst.ptr + offset as u64,
                data,
                self.stream.cu_stream(),
            )?;
        }
        Ok(())
    }

    /// Waits for the stream, then fills `dst` from device address `src`.
    pub fn copy_to_host<T: Plain>(&self, src: u64, dst: &mut [T]) -> Result<(), CudaError> {
        let len = std::mem::size_of_val(dst);
        // SAFETY: `T` is plain data (any bytes are a valid value), so the
        // slice may be written as bytes; the caller passes an address with
        // at least that many bytes behind it, and the stream is
        // synchronised before the host reads.
        unsafe {
            let bytes = std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u8, len);
            cudarc::driver::result::memcpy_dtoh_async(bytes, src, self.stream.cu_stream())?;
        }
        self.stream.synchronize()?;
        Ok(())
    }

    /// Launches `name` with `args` (see [`crate::kernel_args`]), or in
    /// [`Mode::Fingerprint`] only records it.
    pub fn launch(
        &self,
        name: &str,
        grid: (u32, u32, u32),
        block: u32,
        args: &mut [KernelArg],
    ) -> Result<(), CudaError> {
        let f = self.function(name);
        if self.mode() == Mode::Fingerprint {
            let mut h = self.fingerprint.load(Ordering::Relaxed);
            let mut eat = |bytes: &[u8]| {
                for &b in bytes {
                    h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
                }
            };
            eat(&(f.cu_function() as usize).to_le_bytes());
            for d in [grid.0, grid.1, grid.2, block] {
                eat(&d.to_le_bytes());
            }
            for &(p, size) in args.iter() {
                // SAFETY: each argument points to a live value of `size` bytes.
                eat(unsafe { std::slice::from_raw_parts(p as *const u8, size) });
            }
            self.fingerprint.store(h, Ordering::Relaxed);
            return Ok(());
        }
        let mut params = [std::ptr::null_mut(); 20];
        assert!(args.len() <= params.len(), "too many kernel arguments");
        for (p, &(a, _)) in params.iter_mut().zip(args.iter()) {
            *p = a;
        }
        let stream = self.stream.cu_stream();
        if self.pdl {
            let mut attr = sys::CUlaunchAttribute {
                id: sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION,
                pad: Default::default(),
                // SAFETY: a zeroed union is a valid value of every member.
                value: unsafe { std::mem::zeroed() },
            };
            attr.value.programmaticStreamSerializationAllowed = 1;
            let config = sys::CUlaunchConfig {
                gridDimX: grid.0,
                gridDimY: grid.1,
                gridDimZ: grid.2,
                blockDimX: block,
                blockDimY: 1,
                blockDimZ: 1,
                sharedMemBytes: 0,
                hStream: stream,
                attrs: &mut attr,
                numAttrs: 1,
            };
            // SAFETY: as below; `config` and `attr` outlive the call.
            unsafe {
                sys::cuLaunchKernelEx(
                    &config,
                    f.cu_function(),
                    params.as_mut_ptr(),
                    std::ptr::null_mut(),
                )
                .result()?;
            }
            return Ok(());
        }
        // SAFETY: every kernel launched here is defined in this crate's
        // sources with the argument list its launcher passes.
        unsafe {
            cudarc::driver::result::launch_kernel(
                f.cu_function(),
                grid,
                (block, 1, 1),
                0,
                stream,
                &mut params[..args.len()],
            )?;
        }
        Ok(())
    }

    pub fn mode(&self) -> Mode {
        if self.mode.load(Ordering::Relaxed) == Mode::Fingerprint as u8 {
            Mode::Fingerprint
        } else {
            Mode::Run
        }
    }

    /// Switches to `mode`; entering [`Mode::Fingerprint`] starts a new
    /// fingerprint.
    pub fn set_mode(&self, mode: Mode) {
        if mode == Mode::Fingerprint {
            self.fingerprint
                .store(0xcbf2_9ce4_8422_2325, Ordering::Relaxed);
            self.capturable.store(true, Ordering::Relaxed);
        }
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// The fingerprint of the launches since [`Mode::Fingerprint`] began,
    /// and whether all of that work can be captured in a graph.
    pub fn fingerprint(&self) -> (u64, bool) {
        (
            self.fingerprint.load(Ordering::Relaxed),
            self.capturable.load(Ordering::Relaxed),
        )
    }

    /// Notes work that a graph cannot hold.
    pub fn not_capturable(&self) {
        self.capturable.store(false, Ordering::Relaxed);
    }

    pub fn bind(&self) -> Result<(), CudaError> {
        self.ctx.bind_to_thread()?;
        Ok(())
    }
}

/// Every kernel of the module, each instance of the per-type macros too.
pub(crate) fn kernel_names() -> Vec<String> {
    use crate::ops::matmul::WEIGHT_TYPES;
    let mut names: Vec<String> = [
        "rms_norm",
        "scale_f32",
        "add_f32",
        "softcap_f32",
        "add_bias",
        "copy_cols",
        "gather_rows",
        "glu",
        "rope",
        "kv_store",
        "quantize",
        "argmax_rows",
        "dequant_act_f16",
        "f32_to_half",
    ]
    .map(String::from)
    .to_vec();
    names.extend(crate::ops::attention::kernel_names().map(String::from));
    for k in &WEIGHT_TYPES {
        names.push(k.embed.into());
        names.push(k.dequant_f16.into());
        names.extend(k.gemv.iter().map(|g| g.to_string()));
        names.push(k.gemv1.into());
    }
    names
}
