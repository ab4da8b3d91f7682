"""What speaks DICOM: `dicom_seg` writes a mask as a DICOM SEG coded with SNOMED CT concepts and reads a SEG back
onto a study's grid. (The DICOMweb datastore itself is MONAI Label's, adapted in apps/seer.)
"""
