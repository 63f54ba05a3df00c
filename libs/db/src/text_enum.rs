//! Enums stored as text: one declaration gives the enum, its spelling in the database (the
//! one conversion each way), `ALL` for exhaustive tests, and sqlx impls that bind and read
//! it as PostgreSQL `text` (arrays as `text[]`), so SQL needs no casts and no type lookup.
//! A text the code does not know is an [`UnknownValue`] naming the value and the column,
//! never a default: a status taken for another would drive a row down the wrong path.

/// A value in a text column that this version does not know (a newer version wrote it, or
/// someone edited the row by hand).
#[derive(Debug, thiserror::Error)]
#[error("unknown value `{value}` in {column}")]
pub struct UnknownValue {
    /// `table.column`.
    pub column: &'static str,
    pub value: String,
}

/// Declares an enum stored as text in `table.column`:
///
/// ```
/// haven_db::text_enum! {
///     /// How an export ended.
///     pub enum Status in "export_history.status" {
///         Completed = "completed",
///         Failed = "failed",
///     }
/// }
/// assert_eq!(Status::Failed.as_str(), "failed");
/// assert_eq!(Status::ALL.len(), 2);
/// ```
#[macro_export]
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident in $column:literal {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        $vis enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            #[allow(dead_code, reason = "not every enum is iterated outside tests")]
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// Its spelling in the database.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The variant spelled `text`, if any.
            #[allow(dead_code, reason = "not every enum is parsed from text")]
            pub fn parse(text: &str) -> Option<$name> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::sqlx::Type<$crate::sqlx::Postgres> for $name {
            fn type_info() -> $crate::sqlx::postgres::PgTypeInfo {
                <str as $crate::sqlx::Type<$crate::sqlx::Postgres>>::type_info()
            }

            fn compatible(ty: &$crate::sqlx::postgres::PgTypeInfo) -> bool {
                <str as $crate::sqlx::Type<$crate::sqlx::Postgres>>::compatible(ty)
            }
        }

        impl $crate::sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> $crate::sqlx::postgres::PgTypeInfo {
                <&str as $crate::sqlx::postgres::PgHasArrayType>::array_type_info()
            }
        }

        impl $crate::sqlx::Encode<'_, $crate::sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut $crate::sqlx::postgres::PgArgumentBuffer,
            ) -> ::std::result::Result<$crate::sqlx::encode::IsNull, $crate::sqlx::error::BoxDynError> {
                <&str as $crate::sqlx::Encode<$crate::sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl $crate::sqlx::Decode<'_, $crate::sqlx::Postgres> for $name {
            fn decode(
                value: $crate::sqlx::postgres::PgValueRef<'_>,
            ) -> ::std::result::Result<Self, $crate::sqlx::error::BoxDynError> {
                let text = <&str as $crate::sqlx::Decode<$crate::sqlx::Postgres>>::decode(value)?;
                $name::parse(text).ok_or_else(|| {
                    ::std::boxed::Box::new($crate::UnknownValue {
                        column: $column,
                        value: text.to_owned(),
                    }) as $crate::sqlx::error::BoxDynError
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::text_enum! {
        /// A test enum.
        pub enum Colour in "paint.colour" {
            Red = "red",
            LightBlue = "light_blue",
        }
    }

    #[test]
    fn spellings_round_trip_and_unknown_text_is_none() {
        for c in Colour::ALL {
            assert_eq!(Colour::parse(c.as_str()), Some(*c));
        }
        assert_eq!(Colour::LightBlue.to_string(), "light_blue");
        assert_eq!(Colour::parse("green"), None);
        let e = crate::UnknownValue {
            column: "paint.colour",
            value: "green".into(),
        };
        assert_eq!(e.to_string(), "unknown value `green` in paint.colour");
    }
}
