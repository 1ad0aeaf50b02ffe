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

/// The parsed `#[matroska(..)]` attributes of an entity.
#[derive(Default)]
struct EntityAttrs {
    scopes: Vec<(Vec<LitStr>, Span)>,
    scopes_fn: Option<Path>,
    manual_behavior: bool,
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
                meta.parse_nested_meta(|inner| {
                    if inner.path.is_ident("fields") {
                        let content;
                        syn::parenthesized!(content in inner.input);
                        let list = content.parse_terminated(|p| p.parse::<LitStr>(), syn::Token![,])?;
                        if list.is_empty() {
                            return Err(inner.error("`fields(..)` needs at least one field name"));
                        }
                        fields = Some(list.into_iter().collect::<Vec<_>>());
                        Ok(())
                    } else {
                        Err(inner.error("expected `fields(\"column\", ..)`"))
                    }
                })?;
                match fields {
                    Some(f) => out.scopes.push((f, span)),
                    None => return Err(meta.error("expected `scope(fields(\"column\", ..))`")),
                }
                Ok(())
            } else if meta.path.is_ident("scopes") {
                out.scopes_fn = Some(meta.value()?.parse()?);
                Ok(())
            } else if meta.path.is_ident("manual_behavior") {
                out.manual_behavior = true;
                Ok(())
            } else {
                Err(meta.error(
                    "unknown matroska attribute; expected `scope(fields(..))`, `scopes = path` or `manual_behavior`",
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

/// The database column name of a field: `#[sea_orm(column_name = "..")]`, or
/// the field name.
fn column_name(f: &syn::Field) -> syn::Result<String> {
    let mut name = None;
    for attr in &f.attrs {
        if !attr.path().is_ident("sea_orm") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("column_name") {
                let lit: LitStr = meta.value()?.parse()?;
                name = Some(lit.value());
            } else if meta.input.peek(syn::Token![=]) {
                let _: syn::Expr = meta.value()?.parse()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _content;
                syn::parenthesized!(_content in meta.input);
                let _: TokenStream2 = _content.parse()?;
            }
            Ok(())
        })?;
    }
    Ok(name.unwrap_or_else(|| field_name(f)))
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
    let mut columns = Vec::new();
    for f in fields {
        columns.push((field_name(f), column_name(f)?, f.ident.clone()));
    }
    let known: Vec<String> = columns.iter().map(|c| c.0.clone()).collect();

    let mut describes = Vec::new();
    for (names, _) in &attrs.scopes {
        let mut params = Vec::new();
        let mut watch = Vec::new();
        let mut values = Vec::new();
        for lit in names {
            let wanted = lit.value();
            let Some((field, column, ident)) = columns.iter().find(|c| c.0 == wanted) else {
                return Err(syn::Error::new(
                    lit.span(),
                    format!("`{wanted}` is not a column field of this Model (columns: {})", known.join(", ")),
                ));
            };
            if params.contains(field) {
                return Err(syn::Error::new(lit.span(), format!("`{wanted}` is listed twice")));
            }
            params.push(field.clone());
            watch.push(column.clone());
            values.push(quote! {
                .with(#field, ::matroska_seaorm::__private::value(&__m.#ident))
            });
        }
        describes.push(quote! {
            let __s = __s.describes_watching(
                [#(#params),*],
                [#(#watch),*],
                |__m: &Model| {
                    ::core::option::Option::Some(::matroska_seaorm::matroska::Params::new() #(#values)*)
                },
            );
        });
    }

    let base = match &attrs.scopes_fn {
        Some(path) => quote! { let __s: ::matroska_seaorm::matroska::Scopes<Model> = #path(); },
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
                    db: &C,
                    insert: bool,
                ) -> ::core::result::Result<Self, ::matroska_seaorm::__private::sea_orm::DbErr>
                where
                    C: ::matroska_seaorm::__private::sea_orm::ConnectionTrait,
                {
                    ::matroska_seaorm::before_save(self, db, insert).await
                }

                async fn after_save<C>(
                    model: Model,
                    db: &C,
                    insert: bool,
                ) -> ::core::result::Result<Model, ::matroska_seaorm::__private::sea_orm::DbErr>
                where
                    C: ::matroska_seaorm::__private::sea_orm::ConnectionTrait,
                {
                    ::matroska_seaorm::after_save(model, db, insert).await
                }

                async fn before_delete<C>(
                    self,
                    db: &C,
                ) -> ::core::result::Result<Self, ::matroska_seaorm::__private::sea_orm::DbErr>
                where
                    C: ::matroska_seaorm::__private::sea_orm::ConnectionTrait,
                {
                    ::matroska_seaorm::before_delete(self, db).await
                }

                async fn after_delete<C>(
                    self,
                    db: &C,
                ) -> ::core::result::Result<Self, ::matroska_seaorm::__private::sea_orm::DbErr>
                where
                    C: ::matroska_seaorm::__private::sea_orm::ConnectionTrait,
                {
                    ::matroska_seaorm::after_delete(self, db).await
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
        }

        #[automatically_derived]
        impl ::matroska_seaorm::__private::RelationField for Model {
            type Target = Model;
        }

        #behavior
    })
}

fn expand_model_ex(input: &DeriveInput, fields: &[syn::Field]) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    let relations: Vec<&syn::Field> = fields.iter().filter(|f| is_relation(&f.ty)).collect();
    let names: Vec<String> = relations.iter().map(|f| field_name(f)).collect();
    let walks = relations.iter().zip(&names).map(|(f, name)| {
        let fi = &f.ident;
        quote_spanned! {f.span()=>
            if let ::core::option::Option::Some(__d) = depth.descend(#name) {
                ::matroska_seaorm::Walk::walk(&self.#fi, __d, out)?;
            }
        }
    });
    Ok(quote! {
        #[automatically_derived]
        impl ::matroska_seaorm::Walk for #ident {
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
