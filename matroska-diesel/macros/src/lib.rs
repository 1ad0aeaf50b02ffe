//! Derive macros of `matroska-diesel`. Use them through `matroska_diesel`
//! (`matroska_diesel::CacheModel`, `matroska_diesel::Walk`), which documents
//! them.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, Data, DeriveInput, Fields, Ident, LitStr, Path};

/// Implements `CacheModel` and `Walk` for a Diesel model. See
/// `matroska_diesel::CacheModel`.
#[proc_macro_derive(CacheModel, attributes(matroska))]
pub fn derive_cache_model(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand_cache_model(&input).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Implements `Walk` for a struct: its fields are relations by name. See
/// `matroska_diesel::Walk`.
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

/// One `belongs_to(Parent, on_delete = "..", on_update = "..")` attribute:
/// the referential actions of a foreign key Diesel's `belongs_to` declares.
struct ReferenceAttr {
    parent: Path,
    foreign_key: Option<Ident>,
    on_delete: Option<TokenStream2>,
    on_update: Option<TokenStream2>,
}

/// What the derive reads from `#[diesel(..)]` and `#[matroska(..)]`.
#[derive(Default)]
struct ModelAttrs {
    table: Option<Path>,
    primary_key: Vec<Ident>,
    belongs_to: Vec<(Path, Option<Ident>)>,
    scopes: Vec<ScopeAttr>,
    references: Vec<ReferenceAttr>,
    collated: Vec<LitStr>,
}

/// A referential action's name as the derive emits it (`None`: no write).
fn action(lit: &LitStr) -> syn::Result<Option<TokenStream2>> {
    let name = lit.value().to_ascii_lowercase().replace([' ', '-'], "_");
    Ok(match name.as_str() {
        "cascade" => Some(quote! { ::matroska_diesel::__private::Action::Cascade }),
        "set_null" | "set_default" => Some(quote! { ::matroska_diesel::__private::Action::Set }),
        "restrict" | "no_action" => None,
        _ => {
            return Err(syn::Error::new(
                lit.span(),
                "expected \"cascade\", \"set_null\", \"set_default\", \"restrict\" or \"no_action\"",
            ))
        }
    })
}

fn parse_reference(input: syn::parse::ParseStream<'_>) -> syn::Result<ReferenceAttr> {
    let content;
    syn::parenthesized!(content in input);
    let parent: Path = content.parse()?;
    let mut out = ReferenceAttr { parent, foreign_key: None, on_delete: None, on_update: None };
    let mut any = false;
    while content.peek(syn::Token![,]) {
        let _: syn::Token![,] = content.parse()?;
        if content.is_empty() {
            break;
        }
        let key: Ident = content.parse()?;
        let _: syn::Token![=] = content.parse()?;
        if key == "foreign_key" {
            out.foreign_key = Some(content.parse()?);
        } else if key == "on_delete" {
            out.on_delete = action(&content.parse()?)?;
            any = true;
        } else if key == "on_update" {
            out.on_update = action(&content.parse()?)?;
            any = true;
        } else {
            return Err(syn::Error::new(
                key.span(),
                "expected `foreign_key = column`, `on_delete = \"..\"` or `on_update = \"..\"`",
            ));
        }
    }
    if !any {
        return Err(syn::Error::new(
            out.parent.span(),
            "`belongs_to(Parent, ..)` declares referential actions: give `on_delete = \"..\"` and/or `on_update = \"..\"`",
        ));
    }
    Ok(out)
}

fn string_list(input: syn::parse::ParseStream<'_>) -> syn::Result<Vec<LitStr>> {
    let content;
    syn::parenthesized!(content in input);
    Ok(content.parse_terminated(|p| p.parse::<LitStr>(), syn::Token![,])?.into_iter().collect())
}

/// Skips the value of an attribute entry this derive does not use.
fn skip(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        let _: syn::Expr = meta.value()?.parse()?;
    } else if meta.input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in meta.input);
        let _: TokenStream2 = content.parse()?;
    }
    Ok(())
}

fn parse_model_attrs(input: &DeriveInput) -> syn::Result<ModelAttrs> {
    let mut out = ModelAttrs::default();
    for attr in &input.attrs {
        if attr.path().is_ident("diesel") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("table_name") {
                    out.table = Some(meta.value()?.parse()?);
                } else if meta.path.is_ident("primary_key") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    out.primary_key =
                        content.parse_terminated(|p| p.parse::<Ident>(), syn::Token![,])?.into_iter().collect();
                } else if meta.path.is_ident("belongs_to") {
                    let content;
                    syn::parenthesized!(content in meta.input);
                    let parent: Path = content.parse()?;
                    let mut fk = None;
                    if content.peek(syn::Token![,]) {
                        let _: syn::Token![,] = content.parse()?;
                        let key: Ident = content.parse()?;
                        if key != "foreign_key" {
                            return Err(syn::Error::new(key.span(), "expected `foreign_key = column`"));
                        }
                        let _: syn::Token![=] = content.parse()?;
                        fk = Some(content.parse()?);
                    }
                    out.belongs_to.push((parent, fk));
                } else {
                    skip(&meta)?;
                }
                Ok(())
            })?;
        } else if attr.path().is_ident("matroska") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("scope") {
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
                                "expected `fields(\"field\", ..)` or `watch(\"field\", ..)` (fields that reorder or cut the list, such as an ORDER BY column of a top-N list)",
                            ))
                        }
                    })?;
                    match fields {
                        Some(fields) => out.scopes.push(ScopeAttr { fields, watch }),
                        None => return Err(meta.error("expected `scope(fields(\"field\", ..))`")),
                    }
                    Ok(())
                } else if meta.path.is_ident("belongs_to") {
                    out.references.push(parse_reference(meta.input)?);
                    Ok(())
                } else if meta.path.is_ident("collated") {
                    let list = string_list(meta.input)?;
                    if list.is_empty() {
                        return Err(meta.error("`collated(..)` needs at least one field name"));
                    }
                    out.collated.extend(list);
                    Ok(())
                } else {
                    Err(meta.error("unknown matroska attribute; expected `scope(fields(..))`, `scope(fields(..), watch(..))`, `belongs_to(Parent, on_delete = \"..\", on_update = \"..\")` or `collated(..)`"))
                }
            })?;
        }
    }
    Ok(out)
}

/// The column a field maps to: `#[diesel(column_name = ..)]`, else its name.
fn column_of(f: &syn::Field) -> syn::Result<Ident> {
    let mut column = None;
    for attr in &f.attrs {
        if !attr.path().is_ident("diesel") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("column_name") {
                let value = meta.value()?;
                if value.peek(LitStr) {
                    let lit: LitStr = value.parse()?;
                    column = Some(Ident::new(&lit.value(), lit.span()));
                } else {
                    column = Some(value.parse::<Ident>()?);
                }
            } else {
                skip(&meta)?;
            }
            Ok(())
        })?;
    }
    match column {
        Some(c) => Ok(c),
        None => f.ident.clone().ok_or_else(|| syn::Error::new(f.span(), "a field without a name")),
    }
}

fn field_name(f: &syn::Field) -> String {
    f.ident.as_ref().map(|i| i.to_string().trim_start_matches("r#").to_owned()).unwrap_or_default()
}

fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
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

fn expand_cache_model(input: &DeriveInput) -> syn::Result<TokenStream2> {
    let ident = &input.ident;
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "derive(CacheModel) needs a model without generic parameters",
        ));
    }
    let fields = named_fields(input, "CacheModel")?;
    let attrs = parse_model_attrs(input)?;
    let table: Path = match attrs.table {
        Some(t) => t,
        None => {
            let name = format!("{}s", snake_case(&ident.to_string()));
            let id = Ident::new(&name, ident.span());
            syn::parse_quote!(#id)
        }
    };
    let known: Vec<String> = fields.iter().map(field_name).collect();
    let find_field = |name: &str, span: Span| -> syn::Result<&syn::Field> {
        fields.iter().find(|f| field_name(f) == name).ok_or_else(|| {
            syn::Error::new(span, format!("`{name}` is not a field of this model (fields: {})", known.join(", ")))
        })
    };
    // the column path of a field
    let column_path = |f: &syn::Field| -> syn::Result<TokenStream2> {
        let c = column_of(f)?;
        Ok(quote_spanned! {f.span()=> #table::#c })
    };
    let name_of = |path: &TokenStream2| quote! { <#path as ::matroska_diesel::__private::diesel::Column>::NAME };

    let mut columns = Vec::new();
    let mut add_column = |f: &syn::Field| -> syn::Result<TokenStream2> {
        let path = column_path(f)?;
        let ty = &f.ty;
        let name = name_of(&path);
        columns.push(quote_spanned! {f.ty.span()=>
            .column(#name, ::matroska_diesel::__private::kind::<#ty>())
        });
        Ok(name)
    };

    // the primary key
    let pk_idents: Vec<Ident> =
        if attrs.primary_key.is_empty() { vec![Ident::new("id", ident.span())] } else { attrs.primary_key.clone() };
    let mut pk_names = Vec::new();
    let mut key_values = Vec::new();
    for pk in &pk_idents {
        // primary_key names columns; find the field mapped to it
        let field = fields.iter().find(|f| column_of(f).map(|c| c == *pk).unwrap_or(false)).ok_or_else(|| {
            syn::Error::new(
                pk.span(),
                format!("no field of this model is the key column `{pk}` (give #[diesel(primary_key(..))])"),
            )
        })?;
        pk_names.push(add_column(field)?);
        let fi = &field.ident;
        key_values.push(quote! { ::matroska_diesel::ToValue::to_value(&self.#fi) });
    }

    // scopes
    let mut scopes = Vec::new();
    for scope in &attrs.scopes {
        let mut seen = Vec::new();
        let mut names = Vec::new();
        for lit in &scope.fields {
            if seen.contains(&lit.value()) {
                return Err(syn::Error::new(lit.span(), format!("`{}` is listed twice", lit.value())));
            }
            seen.push(lit.value());
            let f = find_field(&lit.value(), lit.span())?;
            names.push(add_column(f)?);
        }
        let mut watch = Vec::new();
        for lit in &scope.watch {
            let f = find_field(&lit.value(), lit.span())?;
            watch.push(name_of(&column_path(f)?));
        }
        scopes.push(quote! { .scope(&[#(#names),*], &[#(#watch),*]) });
    }

    // relations
    let default_fk = |parent: &Path| {
        let last = parent.segments.last().map(|s| s.ident.to_string()).unwrap_or_default();
        Ident::new(&format!("{}_id", snake_case(&last)), parent.span())
    };
    let mut fks = Vec::new();
    for (parent, fk) in &attrs.belongs_to {
        let column = match fk {
            Some(c) => c.clone(),
            None => default_fk(parent),
        };
        let field = fields.iter().find(|f| column_of(f).map(|c| c == column).unwrap_or(false)).ok_or_else(|| {
            syn::Error::new(parent.span(), format!("no field of this model is the foreign key `{column}`"))
        })?;
        let name = add_column(field)?;
        fks.push(quote! {
            .foreign_key(
                #name,
                ::matroska_diesel::__private::table_name_of::<
                    <#parent as ::matroska_diesel::__private::diesel::associations::HasTable>::Table
                >().0,
            )
        });
    }

    // referential actions of the relations
    let mut references = Vec::new();
    for r in &attrs.references {
        let column = r.foreign_key.clone().unwrap_or_else(|| default_fk(&r.parent));
        let last = |p: &Path| p.segments.last().map(|s| s.ident.to_string());
        let declared = attrs
            .belongs_to
            .iter()
            .any(|(p, fk)| last(p) == last(&r.parent) && fk.clone().unwrap_or_else(|| default_fk(p)) == column);
        if !declared {
            return Err(syn::Error::new(
                r.parent.span(),
                format!("no `#[diesel(belongs_to(..))]` of this model has this parent and the foreign key `{column}`"),
            ));
        }
        let field = fields.iter().find(|f| column_of(f).map(|c| c == column).unwrap_or(false)).ok_or_else(|| {
            syn::Error::new(r.parent.span(), format!("no field of this model is the foreign key `{column}`"))
        })?;
        let name = name_of(&column_path(field)?);
        let parent = &r.parent;
        let opt = |a: &Option<TokenStream2>| match a {
            Some(a) => quote! { ::core::option::Option::Some(#a) },
            None => quote! { ::core::option::Option::None },
        };
        let (on_delete, on_update) = (opt(&r.on_delete), opt(&r.on_update));
        references.push(quote! {
            .reference(
                #name,
                ::matroska_diesel::__private::table_name_of::<
                    <#parent as ::matroska_diesel::__private::diesel::associations::HasTable>::Table
                >().0,
                #on_delete,
                #on_update,
            )
        });
    }

    // collated scope fields
    let mut collated = Vec::new();
    for lit in &attrs.collated {
        let f = find_field(&lit.value(), lit.span())?;
        if !attrs.scopes.iter().any(|s| s.fields.iter().any(|x| x.value() == lit.value())) {
            return Err(syn::Error::new(
                lit.span(),
                format!("`{}` is not a field of any `scope(fields(..))`", lit.value()),
            ));
        }
        collated.push(name_of(&column_path(f)?));
    }
    let collated = if collated.is_empty() {
        quote! {}
    } else {
        quote! { .collated(&[#(#collated),*]) }
    };

    Ok(quote! {
        #[automatically_derived]
        impl ::matroska_diesel::CacheModel for #ident {
            type Table = #table::table;

            fn table_name() -> &'static str {
                <Self as ::matroska_diesel::CacheModel>::info().table()
            }

            fn info() -> &'static ::matroska_diesel::ModelInfo {
                static INFO: ::std::sync::OnceLock<::matroska_diesel::ModelInfo> = ::std::sync::OnceLock::new();
                INFO.get_or_init(|| {
                    let (__table, __schema) = ::matroska_diesel::__private::table_name_of::<#table::table>();
                    ::matroska_diesel::__private::ModelInfoBuilder::new(__table, __schema)
                        #(#columns)*
                        .primary_key(&[#(#pk_names),*])
                        #(#scopes)*
                        #(#fks)*
                        #(#references)*
                        #collated
                        .build()
                })
            }

            fn key(&self) -> ::std::vec::Vec<::matroska_diesel::matroska::Value> {
                ::std::vec![#(#key_values),*]
            }
        }

        ::matroska_diesel::__private::inventory::submit! {
            ::matroska_diesel::__private::Registered(<#ident as ::matroska_diesel::CacheModel>::info)
        }

        #[automatically_derived]
        impl ::matroska_diesel::Walk for #ident {
            fn walk(
                &self,
                depth: &::matroska_diesel::Depth,
                out: &mut ::matroska_diesel::Collector,
            ) -> ::core::result::Result<(), ::matroska_diesel::Error> {
                ::matroska_diesel::__private::walk_row(self, depth, out)
            }

            fn relation_name() -> ::core::option::Option<&'static str> {
                ::core::option::Option::Some(<Self as ::matroska_diesel::CacheModel>::table_name())
            }

            fn children_in(
                &self,
                child_table: &str,
                out: &mut ::matroska_diesel::Collector,
            ) -> ::core::result::Result<(), ::matroska_diesel::Error> {
                ::matroska_diesel::__private::row_children_in(self, child_table, out)
            }
        }

        #[automatically_derived]
        impl ::matroska_diesel::__private::RelationField for #ident {
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
                ::matroska_diesel::Walk::walk(&self.#fi, __d, out)?;
            }
        }
    });
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let mut where_clause = where_clause.cloned().unwrap_or_else(|| syn::parse_quote!(where));
    if !input.generics.params.is_empty() {
        for f in &walked {
            let ty = &f.ty;
            where_clause.predicates.push(syn::parse_quote!(#ty: ::matroska_diesel::Walk));
        }
    }
    Ok(quote! {
        #[automatically_derived]
        impl #impl_generics ::matroska_diesel::Walk for #ident #ty_generics #where_clause {
            fn walk(
                &self,
                depth: &::matroska_diesel::Depth,
                out: &mut ::matroska_diesel::Collector,
            ) -> ::core::result::Result<(), ::matroska_diesel::Error> {
                depth.check_known(#owner, &[#(#names),*])?;
                #(#walks)*
                ::core::result::Result::Ok(())
            }
        }

        #[automatically_derived]
        impl #impl_generics ::matroska_diesel::__private::RelationField for #ident #ty_generics {
            type Target = Self;
        }
    })
}
