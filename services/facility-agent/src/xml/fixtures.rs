//! Synthetic MoH XML exports (both layouts) for tests and demonstrations: one patient, her
//! episode summary, lab results, referral and follow-up appointment, as a HIS would export them.

use base64::Engine as _;

/// Base64 of a text, as NOIDUNGFILE holds it.
pub fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Leaf elements from (tag, text) pairs.
pub fn leafs(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("<{k}>{v}</{k}>"))
        .collect()
}

/// The XML declaration exporters write.
pub const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>";

/// An XML1 table (episode summary) of episode `ma_lk`.
pub fn xml1(ma_lk: &str, cccd: &str) -> String {
    format!(
        "{XML_DECL}<CHITIEU_TONGHOP_KCB>{}</CHITIEU_TONGHOP_KCB>",
        leafs(&[
            ("MA_LK", ma_lk),
            ("STT", "1"),
            ("MA_BN", "BN0001"),
            ("HO_TEN", "Nguyễn Thị Hồng Nhung"),
            ("SO_CCCD", cccd),
            ("NGAY_SINH", "198503170000"),
            ("GIOI_TINH", "2"),
            ("MA_QUOCTICH", "000"),
            ("MA_DANTOC", "01"),
            ("DIA_CHI", "Số 12 Trần Hưng Đạo, Hoàn Kiếm"),
            ("MATINH_CU_TRU", "01"),
            ("MA_THE_BHYT", "HN2010123456789"),
            ("MA_DKBD", "01001"),
            ("GT_THE_TU", "20260101"),
            ("GT_THE_DEN", "20261231"),
            ("CHAN_DOAN_RV", "Viêm phổi"),
            ("MA_BENH_CHINH", "J18.9"),
            ("MA_BENH_KT", "I10;E11"),
            ("NGAY_VAO", "202611010830"),
            ("NGAY_RA", "202611041000"),
            ("MA_LOAI_RV", "2"),
            ("MA_CSKCB", "01001"),
        ])
    )
}

/// An XML4 table: three result lines of two services.
pub fn xml4(ma_lk: &str) -> String {
    let row = |stt: &str, service: &str, code: &str, value: &str, at: &str| {
        format!(
            "<CHI_TIET_CLS>{}<MO_TA/><KET_LUAN></KET_LUAN></CHI_TIET_CLS>",
            leafs(&[
                ("MA_LK", ma_lk),
                ("STT", stt),
                ("MA_DICH_VU", service),
                ("MA_CHI_SO", code),
                ("TEN_CHI_SO", "Glucose"),
                ("GIA_TRI", value),
                ("DON_VI_DO", "mmol/L"),
                ("NGAY_KQ", at),
                ("MA_BS_DOC_KQ", "000123/HNO-CCHN;000456/HNO-CCHN"),
            ])
        )
    };
    format!(
        "{XML_DECL}<CHITIEU_CHITIET_DICHVUCANLAMSANG><DSACH_CHI_TIET_CLS>{}{}{}</DSACH_CHI_TIET_CLS></CHITIEU_CHITIET_DICHVUCANLAMSANG>",
        row("2", "23.0075.1494", "GLU2", "6,1", "202611021000"),
        row("1", "23.0075.1494", "GLU", "8.9", "202611020900"),
        row("1", "22.0120.1370", "HGB", "146.7", "202611020930"),
    )
}

/// An XML13 table (referral slip) in the 4750 or the 3176 layout.
pub fn xml13(ma_lk: &str, layout_3176: bool) -> String {
    let slip = format!("CT{ma_lk}");
    let mut f = vec![
        ("MA_LK", ma_lk),
        ("SO_HOSO", "HS000001"),
        ("SO_CHUYENTUYEN", "0001/CT"),
        ("GIAY_CHUYEN_TUYEN", &slip),
        ("MA_CSKCB", "01001"),
        ("HO_TEN", "Nguyễn Thị Hồng Nhung"),
        ("NGAY_SINH", "198503170000"),
        ("GIOI_TINH", "2"),
        ("MA_NGHE_NGHIEP", "00000"),
        ("NGAY_VAO", "202611010830"),
        ("NGAY_RA", "202611041000"),
        ("DAU_HIEU_LS", "Sốt 39°C, ho, khó thở"),
        ("CHAN_DOAN_RV", "Viêm phổi"),
        ("QT_BENHLY", "Điều trị 3 ngày không cải thiện"),
        ("TOMTAT_KQ", "Glucose 8.9 mmol/L"),
        ("MA_BENH_CHINH", "J18.9"),
        ("MA_BENH_KT", "I10"),
        ("MA_LOAI_RV", "2"),
        ("MA_LYDO_CT", "2"),
        ("HUONG_DIEU_TRI", "Điều trị chuyên khoa"),
        ("PHUONGTIEN_VC", "Xe cứu thương"),
        ("HOTEN_NGUOI_HT", "Lê Thị Hoa"),
        ("CHUCDANH_NGUOI_HT", "Điều dưỡng"),
        ("MA_BAC_SI", "094041/HNO-CCHN"),
        ("MA_TTDV", "2405020801"),
    ];
    if layout_3176 {
        f.extend([
            ("MA_CSKCB_DI", "01001;01002"),
            ("MA_CSKCB_DEN", "79025"),
            ("TINH_TRANG_CT", "Tỉnh, SpO2 93%"),
            ("DU_PHONG", "<sig/>"),
        ]);
    } else {
        f.extend([
            ("MA_NOI_DI", "01001"),
            ("MA_NOI_DEN", "79025"),
            ("PP_DIEUTRI", "Kháng sinh"),
        ]);
    }
    // DU_PHONG carries markup under 3176: escape it as an exporter would.
    let body = leafs(&f).replace("<sig/></DU_PHONG>", "&lt;sig/&gt;</DU_PHONG>");
    format!("{XML_DECL}<CHI_TIEU_GIAYCHUYENTUYEN>{body}</CHI_TIEU_GIAYCHUYENTUYEN>")
}

/// An XML14 table (follow-up appointment) in the 4750 or the 3176 layout.
pub fn xml14(ma_lk: &str, layout_3176: bool) -> String {
    let slip = format!("{ma_lk}/GH");
    format!(
        "{XML_DECL}<CHI_TIEU_GIAYHEN_KHAMLAI>{}</CHI_TIEU_GIAYHEN_KHAMLAI>",
        leafs(&[
            ("MA_LK", ma_lk),
            ("SO_GIAYHEN_KL", &slip),
            ("MA_CSKCB", "01001"),
            ("HO_TEN", "Nguyễn Thị Hồng Nhung"),
            ("NGAY_VAO", "202611010830"),
            ("NGAY_RA", "202611041000"),
            (
                "NGAY_HEN_KL",
                if layout_3176 {
                    "20261118"
                } else {
                    "202611180800"
                }
            ),
            ("CHAN_DOAN_RV", "Viêm phổi"),
            ("MA_BENH_CHINH", "J18.9"),
            ("MA_DOITUONG_KCB", "1.1"),
            ("MA_BAC_SI", "094041/HNO-CCHN"),
            ("MA_TTDV", "2405020801"),
            ("NGAY_CT", "20261104"),
        ])
    )
}

/// A GIAMDINHHS envelope of `facility` holding the episodes' (LOAIHOSO, inner table) files.
pub fn envelope(facility: &str, episodes: &[Vec<(&str, String)>]) -> String {
    let hoso: String = episodes
        .iter()
        .map(|files| {
            let files: String = files
                .iter()
                .map(|(t, inner)| {
                    format!("<FILEHOSO><LOAIHOSO>{t}</LOAIHOSO><NOIDUNGFILE>{}</NOIDUNGFILE></FILEHOSO>", b64(inner))
                })
                .collect();
            format!("<HOSO>{files}</HOSO>")
        })
        .collect();
    format!(
        "{XML_DECL}<GIAMDINHHS><THONGTINDONVI><MACSKCB>{facility}</MACSKCB></THONGTINDONVI><THONGTINHOSO><NGAYLAP>20261105</NGAYLAP><SOLUONGHOSO>{}</SOLUONGHOSO><DANHSACHHOSO>{hoso}</DANHSACHHOSO></THONGTINHOSO><CHUKYDONVI>&lt;Signature&gt;facility&lt;/Signature&gt;</CHUKYDONVI></GIAMDINHHS>",
        episodes.len()
    )
}

/// Every table of one episode (and an XML2 the agent ignores).
pub fn full_episode(ma_lk: &str, cccd: &str, layout_3176: bool) -> Vec<(&'static str, String)> {
    vec![
        ("XML1", xml1(ma_lk, cccd)),
        ("XML2", "<ignored/>".into()),
        ("XML4", xml4(ma_lk)),
        ("XML13", xml13(ma_lk, layout_3176)),
        ("XML14", xml14(ma_lk, layout_3176)),
    ]
}
