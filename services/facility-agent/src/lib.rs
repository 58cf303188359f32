//! The facility agent: reads the MoH XML tables a hospital information system already exports
//! (QĐ 130 as amended by QĐ 4750 and QĐ 3176) and turns them into lienthong events.

pub mod xml;
