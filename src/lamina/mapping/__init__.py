"""One model, several wire formats: DICOM JSON (PS3.18 F), later FHIR."""
