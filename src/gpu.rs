//! Rust mirrors of the structs the shaders declare (chunk parameters, combine settings, term
//! records, the scalars block). [`gpu_struct!`] declares one and a test that compares it field by
//! field (name, offset, type) with the WGSL declaration, through naga's reflection of the file
//! that declares it, so that the two sides cannot drift.

/// The type of a field as both sides spell it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A WGSL scalar: "u32", "i32" or "f32".
    Scalar(&'static str),
    /// Another mirrored struct, by name.
    Struct(&'static str),
    /// A fixed-size array of scalars.
    Array(&'static str, usize),
}

/// One field of a mirrored struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name (the same on both sides).
    pub name: &'static str,
    /// Byte offset in the Rust struct.
    pub offset: usize,
    /// Its type.
    pub ty: FieldType,
}

/// A type a mirrored field may have.
pub trait GpuType {
    /// Its description.
    fn describe() -> FieldType;
}

impl GpuType for u32 {
    fn describe() -> FieldType {
        FieldType::Scalar("u32")
    }
}

impl GpuType for i32 {
    fn describe() -> FieldType {
        FieldType::Scalar("i32")
    }
}

impl GpuType for f32 {
    fn describe() -> FieldType {
        FieldType::Scalar("f32")
    }
}

impl<T: GpuType, const N: usize> GpuType for [T; N] {
    fn describe() -> FieldType {
        match T::describe() {
            FieldType::Scalar(s) => FieldType::Array(s, N),
            other => panic!("arrays of {other:?} are not mirrored"),
        }
    }
}

/// A `#[repr(C)]` struct mirrored from a shader file.
pub trait GpuStruct: bytemuck::Pod {
    /// The struct's name in WGSL (the same as in Rust).
    const NAME: &'static str;
    /// The shader file that declares it.
    const FILE: &'static str;
    /// Its fields in order.
    fn fields() -> Vec<Field>;
}

/// Declares a `#[repr(C)]` mirror of WGSL struct `$name` declared in shader file `$file`, and a
/// test `$test` comparing the two field by field.
#[macro_export]
#[doc(hidden)]
macro_rules! gpu_struct {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident in $file:literal test $test:ident {
            $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$fmeta])* pub $field: $ty),*
        }

        impl $crate::gpu::GpuStruct for $name {
            const NAME: &'static str = stringify!($name);
            const FILE: &'static str = $file;
            fn fields() -> Vec<$crate::gpu::Field> {
                vec![$($crate::gpu::Field {
                    name: stringify!($field),
                    offset: core::mem::offset_of!($name, $field),
                    ty: <$ty as $crate::gpu::GpuType>::describe(),
                }),*]
            }
        }

        impl $crate::gpu::GpuType for $name {
            fn describe() -> $crate::gpu::FieldType {
                $crate::gpu::FieldType::Struct(stringify!($name))
            }
        }

        #[cfg(test)]
        #[test]
        fn $test() {
            $crate::gpu::check_against_wgsl::<$name>();
        }
    };
}

/// Panics, naming the field, unless `T` matches its WGSL declaration.
#[cfg(test)]
pub(crate) fn check_against_wgsl<T: GpuStruct>() {
    let source =
        crate::wgsl::shader_file(T::FILE).unwrap_or_else(|| panic!("{} does not compose", T::FILE));
    let (module, _) = crate::wgsl::parse(T::FILE, source).unwrap_or_else(|e| panic!("{e}"));
    let (_, ty) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(T::NAME))
        .unwrap_or_else(|| panic!("{} declares no struct {}", T::FILE, T::NAME));
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{} is not a struct in {}", T::NAME, T::FILE);
    };
    let fields = T::fields();
    let wgsl: Vec<String> = members.iter().filter_map(|m| m.name.clone()).collect();
    let rust: Vec<&str> = fields.iter().map(|f| f.name).collect();
    assert_eq!(
        wgsl,
        rust,
        "{}: fields differ between Rust and {}",
        T::NAME,
        T::FILE
    );
    for (m, f) in members.iter().zip(&fields) {
        assert_eq!(
            m.offset as usize,
            f.offset,
            "{}.{}: offset",
            T::NAME,
            f.name
        );
        assert_eq!(
            describe(&module, m.ty),
            f.ty,
            "{}.{}: type differs from {}",
            T::NAME,
            f.name,
            T::FILE
        );
    }
    assert_eq!(
        *span as usize,
        std::mem::size_of::<T>(),
        "{}: size",
        T::NAME
    );
}

#[cfg(test)]
fn describe(module: &naga::Module, ty: naga::Handle<naga::Type>) -> FieldType {
    let scalar = |s: &naga::Scalar| match (s.kind, s.width) {
        (naga::ScalarKind::Uint, 4) => "u32",
        (naga::ScalarKind::Sint, 4) => "i32",
        (naga::ScalarKind::Float, 4) => "f32",
        other => panic!("unmirrored scalar {other:?}"),
    };
    let t = &module.types[ty];
    match &t.inner {
        naga::TypeInner::Scalar(s) => FieldType::Scalar(scalar(s)),
        naga::TypeInner::Struct { .. } => {
            let name = t.name.clone().unwrap_or_default();
            FieldType::Struct(Box::leak(name.into_boxed_str()))
        }
        naga::TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => match describe(module, *base) {
            FieldType::Scalar(s) => FieldType::Array(s, n.get() as usize),
            other => panic!("unmirrored array of {other:?}"),
        },
        other => panic!("unmirrored type {other:?}"),
    }
}
