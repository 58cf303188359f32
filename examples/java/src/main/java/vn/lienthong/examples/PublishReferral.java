package vn.lienthong.examples;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import com.google.protobuf.ByteString;
import com.google.protobuf.Timestamp;
import io.grpc.CallCredentials;
import io.grpc.Grpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.Base64;
import java.util.UUID;
import java.util.concurrent.Executor;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import vn.lienthong.v1.Action;
import vn.lienthong.v1.DatePrecision;
import vn.lienthong.v1.Diagnosis;
import vn.lienthong.v1.DischargeType;
import vn.lienthong.v1.EpisodeDates;
import vn.lienthong.v1.EventEnvelope;
import vn.lienthong.v1.EventHeader;
import vn.lienthong.v1.EventResult;
import vn.lienthong.v1.FacilityRef;
import vn.lienthong.v1.IngestServiceGrpc;
import vn.lienthong.v1.InsuranceCard;
import vn.lienthong.v1.Outcome;
import vn.lienthong.v1.PartialDateTime;
import vn.lienthong.v1.Patient;
import vn.lienthong.v1.PersonIdKind;
import vn.lienthong.v1.Practitioner;
import vn.lienthong.v1.PractitionerRole;
import vn.lienthong.v1.PublishRequest;
import vn.lienthong.v1.PublishResponse;
import vn.lienthong.v1.ReferralEvent;
import vn.lienthong.v1.ReferralReason;
import vn.lienthong.v1.ReferralSlip;
import vn.lienthong.v1.Sex;
import vn.lienthong.v1.ValidationError;
import vn.lienthong.v1.XmlLayout;

/**
 * Publishes one referral slip to the lienthong gateway the way a HIS does: builds the slip,
 * computes its document id and event id with the standard library, publishes over TLS with a
 * bearer token, checks ACCEPTED; then publishes an invalid slip and prints the violations.
 *
 * <p>Environment: LIENTHONG_GATEWAY_URL (https://host:port), LIENTHONG_GATEWAY_CA (the CA of the
 * gateway's certificate, PEM), LIENTHONG_GATEWAY_TOKEN_FILE (the facility's bearer token).
 * Exit status: 0 when the valid slip was accepted and the invalid one rejected, 1 otherwise.
 */
public final class PublishReferral {
  /** The namespace of every lienthong event id (proto/lienthong/v1/common.proto). */
  static final UUID EVENT_ID_NAMESPACE = UUID.fromString("78f625d9-7786-4190-a2ae-c045bc2670c5");

  private static final ZoneOffset VIETNAM = ZoneOffset.ofHours(7);
  private static final DateTimeFormatter DAY = DateTimeFormatter.ofPattern("yyyyMMdd");
  private static final DateTimeFormatter MINUTE = DateTimeFormatter.ofPattern("yyyyMMddHHmm");

  private PublishReferral() {}

  /** A referral's document id: issuing facility and slip number, each trimmed. */
  static String referralDocumentId(String issuer, String slipNumber) {
    return "referral/" + issuer.trim() + "/" + slipNumber.trim();
  }

  /** UUID version 5 (SHA-1) of "kind\ndocument_id\nversion" under the lienthong namespace. */
  static String eventId(String kind, String documentId, long version) {
    byte[] name = (kind + "\n" + documentId + "\n" + version).getBytes(StandardCharsets.UTF_8);
    MessageDigest sha1;
    try {
      sha1 = MessageDigest.getInstance("SHA-1");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("every Java runtime has SHA-1", e);
    }
    long msb = EVENT_ID_NAMESPACE.getMostSignificantBits();
    long lsb = EVENT_ID_NAMESPACE.getLeastSignificantBits();
    for (int i = 7; i >= 0; i--) {
      sha1.update((byte) (msb >>> (8 * i)));
    }
    for (int i = 7; i >= 0; i--) {
      sha1.update((byte) (lsb >>> (8 * i)));
    }
    sha1.update(name);
    byte[] h = sha1.digest();
    h[6] = (byte) ((h[6] & 0x0f) | 0x50); // version 5
    h[8] = (byte) ((h[8] & 0x3f) | 0x80); // RFC 4122 variant
    long hi = 0;
    long lo = 0;
    for (int i = 0; i < 8; i++) {
      hi = (hi << 8) | (h[i] & 0xff);
      lo = (lo << 8) | (h[8 + i] & 0xff);
    }
    return new UUID(hi, lo).toString();
  }

  /** Checks this client's ids against the published test vectors; throws on the first mismatch. */
  static int checkVectors(Path file) throws Exception {
    JsonObject vectors = JsonParser.parseString(Files.readString(file)).getAsJsonObject();
    if (!EVENT_ID_NAMESPACE.toString().equals(vectors.get("namespace").getAsString())) {
      throw new IllegalStateException("the vectors name another namespace");
    }
    int checked = 0;
    for (JsonElement e : vectors.getAsJsonArray("event_ids")) {
      JsonObject v = e.getAsJsonObject();
      String got = eventId(v.get("kind").getAsString(), v.get("document_id").getAsString(),
          v.get("document_version").getAsLong());
      if (!got.equals(v.get("event_id").getAsString())) {
        throw new IllegalStateException("event id " + got + " differs from vector " + v);
      }
      checked++;
    }
    for (JsonElement e : vectors.getAsJsonArray("document_ids")) {
      JsonObject v = e.getAsJsonObject();
      if (!v.get("kind").getAsString().equals("referral")) {
        continue;
      }
      String got = referralDocumentId(v.get("facility").getAsString(), v.get("slip_number").getAsString());
      if (!got.equals(v.get("document_id").getAsString())) {
        throw new IllegalStateException("document id " + got + " differs from vector " + v);
      }
      checked++;
    }
    return checked;
  }

  /** The facility a token was issued to (its `sub` claim); the gateway verifies the token. */
  static String tokenFacility(String token) {
    String[] parts = token.split("\\.");
    if (parts.length != 3) {
      throw new IllegalArgumentException("the token file does not hold a JWT (three dot-separated parts)");
    }
    String claims = new String(Base64.getUrlDecoder().decode(parts[1]), StandardCharsets.UTF_8);
    return JsonParser.parseString(claims).getAsJsonObject().get("sub").getAsString();
  }

  private static PartialDateTime day(LocalDateTime t) {
    return PartialDateTime.newBuilder().setValue(t.format(DAY)).setPrecision(DatePrecision.DATE_PRECISION_DAY).build();
  }

  private static PartialDateTime minute(LocalDateTime t) {
    return PartialDateTime.newBuilder().setValue(t.format(MINUTE)).setPrecision(DatePrecision.DATE_PRECISION_MINUTE).build();
  }

  private static Practitioner doctor(String licence, PractitionerRole role) {
    return Practitioner.newBuilder().setLicenceNumber(licence).setRaw(licence).setRole(role).build();
  }

  /** A complete referral slip from `issuer` to `receiving`, issued today in Vietnam time. */
  static ReferralEvent referral(String issuer, String receiving, String slipNumber) {
    LocalDateTime now = LocalDateTime.now(VIETNAM).withSecond(0).withNano(0);
    LocalDateTime admitted = now.minusHours(30);
    LocalDateTime discharged = now.minusHours(2);
    Patient patient = Patient.newBuilder()
        .setCitizenId("079085123456")
        .setIdKind(PersonIdKind.PERSON_ID_KIND_CITIZEN_ID)
        .setFullName("Nguyễn Văn An")
        .setBirthDate(PartialDateTime.newBuilder().setValue("19850314").setPrecision(DatePrecision.DATE_PRECISION_DAY))
        .setSex(Sex.SEX_MALE)
        .setEthnicityCode("01")
        .setNationalityCode("000")
        .setAddress("Số 12 đường Lê Lợi, phường Bến Thành")
        .setResidenceProvinceCode("79")
        .addInsuranceCards(InsuranceCard.newBuilder()
            .setNumber("DN4790123456789")
            .setValidFrom(day(now.minusDays(300)))
            .setValidTo(day(now.plusDays(60)))
            .setRegisteredFacilityCode(issuer))
        .build();
    ReferralSlip slip = ReferralSlip.newBuilder()
        .setEpisodeId(issuer + ".0000012345")
        .setRecordNumber("HS000123")
        .setBookNumber("0042")
        .setSlipNumber(slipNumber)
        .setIssuer(FacilityRef.newBuilder().setCode(issuer))
        .addSending(FacilityRef.newBuilder().setCode(issuer))
        .setReceiving(FacilityRef.newBuilder().setCode(receiving))
        .setPatient(patient)
        .setEpisode(EpisodeDates.newBuilder().setAdmittedAt(minute(admitted)).setDischargedAt(minute(discharged)))
        .setClinicalSigns("Sốt 39°C, ho có đờm, khó thở nhẹ")
        .setDiagnosis(Diagnosis.newBuilder().setMainIcd10("J18.9").addSecondaryIcd10("I10").setText("Viêm phổi, tăng huyết áp"))
        .setCourseOfIllness("Vào viện ngày thứ 3 của bệnh, điều trị kháng sinh không đáp ứng")
        .setTestSummary("X-quang: đám mờ đáy phổi phải; CRP 85 mg/L")
        .setTreatment("Ceftriaxone 2g/ngày")
        .setDischargeType(DischargeType.DISCHARGE_TYPE_TRANSFERRED_PROFESSIONAL)
        .setReason(ReferralReason.REFERRAL_REASON_BEYOND_CAPABILITY)
        .setPlannedTreatment("Chuyển tuyến trên điều trị tiếp")
        .setTransport("Xe cứu thương")
        .setPhysician(doctor("012345/HCM-CCHN", PractitionerRole.PRACTITIONER_ROLE_PHYSICIAN))
        .setHeadOfFacility(doctor("067890/HCM-CCHN", PractitionerRole.PRACTITIONER_ROLE_HEAD_OF_FACILITY))
        .setValidUntil(day(discharged.plusDays(14)))
        .setSignature(ByteString.copyFromUtf8("<Signature>example</Signature>"))
        .setLayout(XmlLayout.XML_LAYOUT_QD3176)
        .setIssuedAt(day(discharged))
        .build();
    String documentId = referralDocumentId(issuer, slipNumber);
    EventHeader header = EventHeader.newBuilder()
        .setEventId(eventId("referral", documentId, 1))
        .setDocumentId(documentId)
        .setDocumentVersion(1)
        .setAction(Action.ACTION_CREATED)
        .setOccurredAt(Timestamp.newBuilder().setSeconds(discharged.toEpochSecond(VIETNAM)))
        .setSourceFacilityCode(issuer)
        .setSourceSystem("example-his-java")
        .setSourceSystemVersion("0.1.0")
        .build();
    return ReferralEvent.newBuilder().setHeader(header).setSlip(slip).build();
  }

  private static CallCredentials bearer(String token) {
    return new CallCredentials() {
      @Override
      public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
        Metadata headers = new Metadata();
        headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
        applier.apply(headers);
      }
    };
  }

  private static EventResult publish(IngestServiceGrpc.IngestServiceBlockingStub stub, ReferralEvent event) {
    PublishRequest request = PublishRequest.newBuilder()
        .addEvents(EventEnvelope.newBuilder().setReferral(event))
        .setRequestId(UUID.randomUUID().toString())
        .build();
    PublishResponse response = stub.withDeadlineAfter(30, TimeUnit.SECONDS).publish(request);
    return response.getResults(0);
  }

  private static String env(String name) {
    String value = System.getenv(name);
    if (value == null || value.isBlank()) {
      throw new IllegalArgumentException(name + " is not set (source .state/env on the local stack)");
    }
    return value;
  }

  public static void main(String[] args) throws Exception {
    Path vectors = Path.of(args.length > 0 ? args[0] : "../../proto/lienthong/v1/ids.test-vectors.json");
    System.out.println("ids: " + checkVectors(vectors) + " test vectors match");

    URI gateway = URI.create(env("LIENTHONG_GATEWAY_URL"));
    String token = Files.readString(Path.of(env("LIENTHONG_GATEWAY_TOKEN_FILE"))).trim();
    String facility = tokenFacility(token);
    ManagedChannel channel = Grpc.newChannelBuilderForAddress(gateway.getHost(), gateway.getPort(),
        TlsChannelCredentials.newBuilder().trustManager(new File(env("LIENTHONG_GATEWAY_CA"))).build()).build();
    int status = 0;
    try {
      var stub = IngestServiceGrpc.newBlockingStub(channel).withCallCredentials(bearer(token));
      String receiving = facility.endsWith("001") ? facility.substring(0, 2) + "002" : facility.substring(0, 2) + "001";
      String slip = "CT" + ThreadLocalRandom.current().nextInt(100_000, 1_000_000) + ".J";

      ReferralEvent valid = referral(facility, receiving, slip);
      EventResult accepted = publish(stub, valid);
      System.out.printf("valid slip %s: %s %s partition %d offset %d%n", valid.getHeader().getEventId(),
          accepted.getOutcome(), accepted.getTopic(), accepted.getPartition(), accepted.getOffset());
      if (accepted.getOutcome() != Outcome.OUTCOME_ACCEPTED) {
        for (ValidationError v : accepted.getErrorsList()) {
          System.out.printf("  %s at %s: %s%n", v.getCode(), v.getPath(), v.getMessage());
        }
        System.out.println("  " + accepted.getMessage());
        status = 1;
      }

      // The same slip with a citizen ID of the wrong length and no receiving facility.
      ReferralEvent invalid = referral(facility, receiving, slip + "X").toBuilder()
          .setSlip(referral(facility, receiving, slip + "X").getSlip().toBuilder()
              .setPatient(valid.getSlip().getPatient().toBuilder().setCitizenId("07908512"))
              .clearReceiving())
          .build();
      EventResult rejected = publish(stub, invalid);
      System.out.printf("invalid slip %s: %s%n", invalid.getHeader().getEventId(), rejected.getOutcome());
      for (ValidationError v : rejected.getErrorsList()) {
        System.out.printf("  %s at %s: %s%n", v.getCode(), v.getPath(), v.getMessageVi());
      }
      if (rejected.getOutcome() != Outcome.OUTCOME_REJECTED || rejected.getErrorsCount() == 0) {
        status = 1;
      }
    } catch (io.grpc.StatusRuntimeException e) {
      Status s = e.getStatus();
      System.err.println("the gateway answered " + s.getCode() + ": " + s.getDescription());
      status = 1;
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(status);
  }
}
