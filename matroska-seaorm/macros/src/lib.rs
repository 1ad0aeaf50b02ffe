//! Derive macros of `matroska-seaorm`. Use them through `matroska_seaorm`
//! (`matroska_seaorm::CacheEntity`, `matroska_seaorm::Walk`), which documents
//! them.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr, Path, Type};

/// Implements `CacheEntity` for the entity, `Walk` for its `Model` /
/// `ModelEx`, and `ActiveModelBehavior` with automatic invalidation.
/// See `matroska_seaorm::CacheEntity`.
#[proc_macro_derive(CacheEntity, attributes(matroska))]
pub fn derive_cache_entity(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_cache_entity(&input)
        .unwrap_or_else(|e| {
            let err = e.into_compile_error();
            if input.ident == "Model" {
                // Keep the entity compiling so that only the real error shows.
                quote! {
                    #err
                    impl ::matroska_seaorm::__private::sea_orm::ActiveModelBehavior for ActiveModel {}
                }
            } else {
                err
            }
        })
        .into()
}

/// Implements `Walk` for a struct: its fields are relations by name.
/// See `matroska_seaorm::Walk`.
#[proc_macro_derive(Walk, attributes(matroska))]
pub fn derive_walk(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_walk(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// One `scope(fields(..), watch(..))` attribute.
struct ScopeAttr {
    fields: Vec<LitStr>,
    watch: Vec<LitStr>,
}

/// The parsed `#[matroska(..)]` attributes of an entity.
#[derive(Default)]
struct EntityAttrs {
    scopes: Vec<(ScopeAttr, Span)>,
    scopes_fn: Option<Path>,
    manual_behavior: bool,
    collated: Vec<LitStr>,
}

fn string_list(input: syn::parse::ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    let content;
    syn::parenthesized!(content in input);
    Ok(content.parse_terminated(|p| p.parse::<LitStr>(), syn::Token![,])?.into_iter().collect())
}

fn parse_entity_attrs(input: &DeriveInput) -> syn::Result<EntityAttrs> {
    let mut out = EntityAttrs::default();
    for attr in &input.attrs {
        if !attr.path().is_ident("matroska") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("scope") {
                let span = meta.path.span();
                let mut fields = None;
                let mut watch = Vec::new();
                meta.parse_nested_meta(|inner| {
                    if inner.path.is_ident("fields") {
                        let list = string_list(inner.input)?;
                        if list.is_empty() {
                            return Err(inner.error("`fields(..)` needs at least one field name"));
                        }
                        fields = Some(list);
                        Ok(())
                    } else if inner.path.is_ident("watch") {
                        let list = string_list(inner.input)?;
                        if list.is_empty() {
                            return Err(inner.error("`watch(..)` needs at least one field name"));
                        }
                        watch = list;
                        Ok(())
                    } else {
                        Err(inner.error(
                            "expected `fields(\"field\", ..)` or `watch(\"field\", ..)` (columns that reorder or cut the list, such as an ORDER BY column of a top-N list)",
                        ))
                    }
                })?;
                match fields {
                    Some(fields) => out.scopes.push((ScopeAttr { fields, watch }, span)),
                    None => return Err(meta.error("expected `scope(fields(\"field\", ..))`")),
                }
                Ok(())
            } else if meta.path.is_ident("scopes") {
                out.scopes_fn = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("manual_behavior") {
                out.manual_behavior = true;
                Ok(())
            } else if meta.path.is_ident("collated") {
                let list = string_list(meta.input)?;
                if list.is_empty() {
                    return Err(meta.error("`collated(..)` needs at least one field name"));
                }
                out.collated.extend(list);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown matroska attribute; expected `scope(fields(..))`, `scope(fields(..), watch(..))`, `collated(..)`, `scopes = path` or `manual_behavior`",
                ))
            }
        })?;
    }
    Ok(out)
}

fn named_fields(input: &DeriveInput, what: &str) -> syn::Result<Vec<syn::Field>> {
    match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => Ok(named.named.iter().cloned().collect()),
            _ => Err(syn::Error::new_spanned(&input.ident, format!("{what} needs a struct with named fields"))),
        },
        _ => Err(syn::Error::new_spanned(&input.ident, format!("{what} can only be derived for structs"))),
    }
}

fn field_name(f: &syn::Field) -> String {
    f.ident.as_ref().map(|i| i.to_string().trim_start_matches("r#").to_owned()).unwrap_or_default()
}

/// The `Column` variant SeaORM derives for a field: its name in
/// UpperCamelCase (a trailing `_` dropped: `type_` is `Type`). The column's
/// database name is then `Column::Variant.as_str()`, whatever
/// `column_name` or `rename_all` says.
fn column_variant(f: &syn::Field) -> syn::Ident {
    use heck::ToUpperCamelCase;
    let name = field_name(f);
    syn::Ident::new(&name.to_upper_camel_case(), f.ident.as_ref().map_or_else(Span::call_site, |i| i.span()))
}

/// `HasOne`, `HasMany` or `BelongsTo`: a relation field of a `ModelEx`.
fn is_relation(ty: &Type) -> bool {
    match ty {
        Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "HasOne" || s.ident == "HasMany" || s.ident == "BelongsTo"),
        _ => false,
    }
}

fn expand_cache_entity(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let name = ident.to_string();
    let fields = named_fields(input, "CacheEntity")?;
    if name == "Model" {
        expand_model(input, &fields)
    } else if name.ends_with("Ex") {
        expand_model_ex(input, &fields)
    } else {
        Err(syn::Error::new_spanned(
            ident,
            "derive(CacheEntity) goes on an entity's `Model` (next to DeriveEntityModel); \
             use derive(Walk) for your own structs",
        ))
    }
}

fn expand_model(input: &DeriveInput, fields: &[syn::Field]) -> syn::Result<TokenStream2> {
    let attrs = parse_entity_attrs(input)?;
    let columns: Vec<(String, &syn::Field)> = fields.iter().map(|f| (field_name(f), f)).collect();
    let known: Vec<String> = columns.iter().map(|c| c.0.clone()).collect();
    let find = |lit: &LitStr| -> syn::Result<&syn::Field> {
        let wanted = lit.value();
        columns.iter().find(|c| c.0 == wanted).map(|c| c.1).ok_or_else(|| {
            syn::Error::new(
                lit.span(),
                format!("`{wanted}` is not a column field of this Model (columns: {})", known.join(", ")),
            )
        })
    };

    let mut describes = Vec::new();
    for (scope, _) in &attrs.scopes {
        let mut seen = Vec::new();
        let mut params = Vec::new();
        let mut values = Vec::new();
        for lit in &scope.fields {
            let field = find(lit)?;
            if seen.contains(&lit.value()) {
                return Err(syn::Error::new(lit.span(), format!("`{}` is listed twice", lit.value())));
            }
            seen.push(lit.value());
            let variant = column_variant(field);
            let ident = &field.ident;
            params.push(quote! { ::matroska_seaorm::__private::column_name(Column::#variant) });
            values.push(quote! {
                .with(
                    ::matroska_seaorm::__private::column_name(Column::#variant),
                    ::matroska_seaorm::__private::value(&__m.#ident)?,
                )
            });
        }
        let mut watch = params.clone();
        for lit in &scope.watch {
            let field = find(lit)?;
            let variant = column_variant(field);
            watch.push(quote! { ::matroska_seaorm::__private::column_name(Column::#variant) });
        }
        describes.push(quote! {
            let __s = __s.describes_watching(
                [#(#params),*],
                [#(#watch),*],
                |__m: &Model| -> ::core::result::Result<
                    ::core::option::Option<::matroska_seaorm::matroska::Params>,
                    ::matroska_seaorm::Error,
                > {
                    ::core::result::Result::Ok(::core::option::Option::Some(
                        ::matroska_seaorm::matroska::Params::new() #(#values)*
                    ))
                },
            );
        });
    }

    if !attrs.collated.is_empty() {
        let mut cols = Vec::new();
        for lit in &attrs.collated {
            let variant = column_variant(find(lit)?);
            cols.push(quote! { ::matroska_seaorm::__private::column_name(Column::#variant) });
        }
        describes.push(quote! { let __s = __s.collated([#(#cols),*]); });
    }

    let scope_columns = if attrs.scopes_fn.is_some() {
        quote! {}
    } else {
        let sets = attrs.scopes.iter().map(|(scope, _)| {
            let cols = scope.fields.iter().filter_map(|lit| find(lit).ok()).map(|f| {
                let variant = column_variant(f);
                quote! { ::matroska_seaorm::__private::column_name(Column::#variant) }
            });
            quote! { ::std::vec![#(#cols),*] }
        });
        quote! {
            fn scope_columns() -> ::core::option::Option<::std::vec::Vec<::std::vec::Vec<&'static str>>> {
                ::core::option::Option::Some(::std::vec![#(#sets),*])
            }
        }
    };

    let base = match &attrs.scopes_fn {
        Some(path) => quote! {
            let __s: ::matroska_seaorm::matroska::Scopes<Model> =
                ::matroska_seaorm::__private::with_all_rows(#path());
        },
        None => quote! { let __s = ::matroska_seaorm::__private::new_scopes::<Entity>(); },
    };

    let behavior = if attrs.manual_behavior {
        quote! {}
    } else {
        quote! {
            #[automatically_derived]
            #[::matroska_seaorm::__private::async_trait]
            impl ::matroska_seaorm::__private::sea_orm::ActiveModelBehavior for ActiveModel {
                async fn before_save<C>(
                    self,
                    _db: &C,
                    _insert: bool,
                ) -> ::core::result::Result<Self, ::matroska_seaorm::__private::sea_orm::DbErr>
                where
                    C: ::matroska_seaorm::__private::sea_orm::ConnectionTrait,
                {
                    ::matroska_seaorm::check_connection::<C>(::matroska_seaorm::entity_name::<Entity>())?;
                    ::core::result::Result::Ok(self)
                }

                async fn before_delete<C>(
                    self,
                    _db: &C,
                ) -> ::core::result::Result<Self, ::matroska_seaorm::__private::sea_orm::DbErr>
                where
                    C: ::matroska_seaorm::__private::sea_orm::ConnectionTrait,
                {
                    ::matroska_seaorm::check_connection::<C>(::matroska_seaorm::entity_name::<Entity>())?;
                    ::core::result::Result::Ok(self)
                }
            }
        }
    };

    Ok(quote! {
        #[automatically_derived]
        impl ::matroska_seaorm::CacheEntity for Entity {
            fn scopes() -> &'static ::matroska_seaorm::matroska::Scopes<Model> {
                static SCOPES: ::std::sync::OnceLock<::matroska_seaorm::matroska::Scopes<Model>> =
                    ::std::sync::OnceLock::new();
                SCOPES.get_or_init(|| {
                    #base
                    #(#describes)*
                    __s
                })
            }

            #scope_columns
        }

        ::matroska_seaorm::__private::inventory::submit! {
            ::matroska_seaorm::__private::Registered(
                ::matroska_seaorm::__private::EntityInfoHandle::of::<Entity>
            )
        }

        #[automatically_derived]
        impl ::matroska_seaorm::Walk for Model {
            fn walk(
                &self,
                depth: &::matroska_seaorm::Depth,
                out: &mut ::matroska_seaorm::Collector,
            ) -> ::core::result::Result<(), ::matroska_seaorm::Error> {
                ::matroska_seaorm::__private::walk_row(self, depth, out, &[])
            }

            fn relation_name() -> ::core::option::Option<&'static str> {
                ::core::option::Option::Some(::matroska_seaorm::entity_name::<Entity>())
            }

            fn children_in(
                &self,
                child_table: &str,
                out: &mut ::matroska_seaorm::Collector,
            ) -> ::core::result::Result<(), ::matroska_seaorm::Error> {
                ::matroska_seaorm::__private::row_children_in(self, child_table, out)
            }
        }

        #[automatically_derived]
        impl ::matroska_seaorm::__private::RelationField for Model {
            type Target = Model;
        }

        #behavior
    })
}

/// The `via = ".."` of a `#[sea_orm(has_many, via = "..")]` field.
fn has_via(f: &syn::Field) -> bool {
    let mut via = false;
    for attr in &f.attrs {
        if !attr.path().is_ident("sea_orm") {
            continue;
        }
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("via") {
                via = true;
            }
            if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let _: TokenStream2 = content.parse()?;
            }
            Ok(())
        });
    }
    via
}

/// The entity type of a `HasOne<E>` / `HasMany<E>` field, if it is one.
fn children_entity(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "HasOne" && last.ident != "HasMany" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
    args.args.iter().find_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    })
}

fn expand_model_ex(input: &DeriveInput, fields: &[syn::Field]) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let relations: Vec<&syn::Field> = fields.iter().filter(|f| is_relation(&f.ty)).collect();
    let names: Vec<String> = relations.iter().map(|f| field_name(f)).collect();
    let walks = relations.iter().zip(&names).map(|(f, name)| {
        let fi = &f.ident;
        // a parent cached with its children depends on who its children are
        let membership = match children_entity(&f.ty) {
            Some(child) if has_via(f) => quote_spanned! {f.span()=>
                ::matroska_seaorm::__private::children_via::<#ident, #child>(self, &self.#fi, out)?;
            },
            Some(child) => quote_spanned! {f.span()=>
                ::matroska_seaorm::__private::children::<#ident, #child>(self, &self.#fi, out)?;
            },
            None => quote! {},
        };
        quote_spanned! {f.span()=>
            if let ::core::option::Option::Some(__d) = depth.descend(#name) {
                #membership
                ::matroska_seaorm::Walk::walk(&self.#fi, __d, out)?;
            }
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl ::matroska_seaorm::Walk for #ident {
            fn children_in(
                &self,
                child_table: &str,
                out: &mut ::matroska_seaorm::Collector,
            ) -> ::core::result::Result<(), ::matroska_seaorm::Error> {
                ::matroska_seaorm::__private::row_children_in(self, child_table, out)
            }

            fn walk(
                &self,
                depth: &::matroska_seaorm::Depth,
                out: &mut ::matroska_seaorm::Collector,
            ) -> ::core::result::Result<(), ::matroska_seaorm::Error> {
                ::matroska_seaorm::__private::walk_row(self, depth, out, &[#(#names),*])?;
                #(#walks)*
                ::core::result::Result::Ok(())
            }

            fn relation_name() -> ::core::option::Option<&'static str> {
                ::core::option::Option::Some(::matroska_seaorm::entity_name::<Entity>())
            }
        }

        #[automatically_derived]
        impl ::matroska_seaorm::__private::RelationField for #ident {
            type Target = #ident;
        }
    })
}

fn expand_walk(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let fields = named_fields(input, "Walk")?;
    let mut walked = Vec::new();
    for f in &fields {
        let mut skip = false;
        for attr in &f.attrs {
            if !attr.path().is_ident("matroska") {
                continue;
            }
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    skip = true;
                    Ok(())
                } else {
                    Err(meta.error("unknown matroska field attribute; expected `skip`"))
                }
            })?;
        }
        if !skip {
            walked.push(f);
        }
    }
    for attr in &input.attrs {
        if attr.path().is_ident("matroska") {
            return Err(syn::Error::new_spanned(
                attr,
                "derive(Walk) takes no struct attribute; `#[matroska(skip)]` goes on fields",
            ));
        }
    }
    let names: Vec<String> = walked.iter().map(|f| field_name(f)).collect();
    let owner = ident.to_string();
    let walks = walked.iter().zip(&names).map(|(f, name)| {
        let fi = &f.ident;
        quote_spanned! {f.span()=>
            if let ::core::option::Option::Some(__d) = depth.descend(#name) {
                ::matroska_seaorm::Walk::walk(&self.#fi, __d, out)?;
            }
        }
    });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::parse_quote!(where));
    // Bounds only for generic structs: on a recursive struct they would not resolve.
    if !input.generics.params.is_empty() {
        for f in &walked {
            let ty = &f.ty;
            where_clause.predicates.push(syn::parse_quote!(#ty: ::matroska_seaorm::Walk));
        }
    }
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::matroska_seaorm::Walk for #ident #ty_generics #where_clause {
            fn walk(
                &self,
                depth: &::matroska_seaorm::Depth,
                out: &mut ::matroska_seaorm::Collector,
            ) -> ::core::result::Result<(), ::matroska_seaorm::Error> {
                depth.check_known(#owner, &[#(#names),*])?;
                #(#walks)*
                ::core::result::Result::Ok(())
            }
        }

        #[automatically_derived]
        impl #impl_generics ::matroska_seaorm::__private::RelationField for #ident #ty_generics {
            type Target = Self;
        }
    })
}
