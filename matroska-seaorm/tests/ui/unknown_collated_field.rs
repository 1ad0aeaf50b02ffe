mod article {
    use matroska_seaorm::CacheEntity;
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, CacheEntity)]
    #[sea_orm(table_name = "article")]
    #[matroska(scope(fields("published")))]
    #[matroska(collated("titel"))]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i32,
        pub published: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

fn main() {}
